"""The language server's resident memory over a long editing session: does it stay bounded?

A minimal JSON-RPC client over stdio (no editor) opens every Rust file of a workspace, then for each round
types one character somewhere, asks for an inline completion there and, every few rounds, opens a fresh
large document. RSS is read from /proc after the warm-up and at checkpoints; growth that levels off
(state snapshots capped, closed documents dropped) is what "bounded" means here.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MemoryReport:
    rounds: int
    files: int
    rss_mib: list[tuple[int, float]] = field(default_factory=list)   # (round, RSS MiB)
    answered: int = 0
    seconds: float = 0.0


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class StdioClient:
    """Just enough of an LSP client: framed requests and notifications; server requests answered with null."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=env)
        self.next_id = 0

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict) -> object:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self._read()
            if message.get("id") == self.next_id and "method" not in message:
                return message.get("result")
            if "method" in message and "id" in message:    # e.g. window/workDoneProgress/create
                self.send({"id": message["id"], "result": None})

    def _read(self) -> dict:
        length = 0
        while (line := self.process.stdout.readline().strip()):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if not length:
            raise ConnectionError("the server closed its output")
        return json.loads(self.process.stdout.read(length))

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def close(self) -> None:
        try:
            self.request("shutdown", {})
            self.notify("exit", {})
            self.process.wait(timeout=120)   # at exit the server finishes its prefill segment (slow on a busy CPU)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def session(root: Path, rounds: int, every: int = 100, seed: int = 0, model: Path | None = None) -> MemoryReport:
    root = root.resolve()
    files = sorted(p for p in root.rglob("*.rs") if "target" not in p.parts)
    if not files:
        raise FileNotFoundError(f"no .rs files under {root}")
    client = StdioClient([sys.executable, "-m", "assistant.cli", "serve"], dict(os.environ))
    report = MemoryReport(rounds, len(files))
    rng = random.Random(seed)
    started = time.perf_counter()
    try:
        options = {"rustle": {"debounceMs": 0, "maxTokens": 16, **({"model": str(model)} if model else {})}}
        client.request("initialize", {"processId": os.getpid(), "rootUri": root.as_uri(), "capabilities": {},
                                      "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}],
                                      "initializationOptions": options})
        client.notify("initialized", {})
        texts = {f.as_uri(): f.read_text(errors="replace").split("\n") for f in files}
        for uri, lines in texts.items():
            client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "rust", "version": 1,
                                                                    "text": "\n".join(lines)}})
        versions = dict.fromkeys(texts, 1)
        for r in range(1, rounds + 1):
            uri = rng.choice(list(texts))
            lines = texts[uri]
            line = rng.randrange(len(lines))
            col = len(lines[line])
            lines[line] += "x"
            versions[uri] += 1
            client.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": versions[uri]},
                "contentChanges": [{"range": {"start": {"line": line, "character": col},
                                              "end": {"line": line, "character": col}}, "text": "x"}]})
            result = client.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": {"line": line, "character": col + 1},
                "context": {"triggerKind": 2}})
            report.answered += bool(result and result.get("items"))
            if r % 10 == 0:   # a large scratch document opened and closed: its text must not stay behind
                scratch = (root / f"scratch{r}.rs").as_uri()
                client.notify("textDocument/didOpen", {"textDocument": {
                    "uri": scratch, "languageId": "rust", "version": 1, "text": "fn f() {}\n" * 100_000}})
                client.notify("textDocument/didClose", {"textDocument": {"uri": scratch}})
            if r == 1 or r % every == 0:
                report.rss_mib.append((r, round(client.rss_mib(), 1)))
    finally:
        report.seconds = time.perf_counter() - started
        client.close()
    return report
