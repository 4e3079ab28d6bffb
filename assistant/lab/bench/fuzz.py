"""The language server under a stream of hostile messages: is every request answered, and does memory stay flat?

A seeded generator draws messages a buggy or hostile client sends (wrong types, out-of-range positions, unopened,
outside and non-file URIs, unknown methods, edits past the end, JSON that is not a message, invalid UTF-8,
lower-case and LF-only headers, lengths shorter than the body or of 10^14 bytes) and sends them in batches to
`rustle serve` over stdio. After each batch a probe, a valid inline-completion request on a document the fuzz
never touches, must come back with the same suggestion as the first probe. At the end: every request id sent
has a response, the server exits 0 after shutdown/exit, its log holds no traceback; RSS at the first probe, every few
thousand messages and at the last.
"""
from __future__ import annotations

import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .serve_memory import rss_mib

PROBE_TEXT = "fn main() {\n    let numbers: Vec<u32> = (0..10).collect();\n    let total: u32 = \n}\n"
PROBE_POSITION = {"line": 2, "character": len("    let total: u32 = ")}


@dataclass
class FuzzReport:
    messages: int
    requests: int = 0                 # hostile requests sent (each must be answered)
    answered: int = 0
    errors: dict[str, int] = field(default_factory=dict)   # of the answers, JSON-RPC errors by code
    probes: int = 0
    probes_equal: int = 0             # probes answered with the first probe's suggestion
    exit_status: int | None = None
    tracebacks: int = 0
    rss_mib: list[tuple[int, float]] = field(default_factory=list)   # (hostile messages sent, RSS MiB) at probes
    seconds: float = 0.0
    probe_text: str = ""


def frame(message: object, header: bytes = b"Content-Length: %d\r\n\r\n", extra: int = 0) -> bytes:
    body = json.dumps(message).encode() if not isinstance(message, bytes) else message
    return header % (len(body) + extra) + body


def hostile_messages(rng: random.Random, uri: str, first_id: int) -> Iterator[tuple[bytes, int | None]]:
    """Endless framed hostile messages about document `uri` (opened by the caller), each with the id of the
    request that must be answered, or None (a notification, or bytes that are not a request)."""
    positions = [{"line": 1, "character": 16}, {"line": -3, "character": 5}, {"line": 10 ** 9, "character": 0},
                 {"line": "one", "character": 2}, None, {"line": 1}, {"line": 0, "character": 2 ** 40}]
    uris = [uri, "file:///etc/passwd", f"{uri}/../../x.rs", "untitled:Untitled-9", "", 42, "file:///no/such/x.rs",
            "http://example.com/x.rs", "file://" + "a" * 5000 + ".rs"]
    methods = ["textDocument/inlineCompletion", "textDocument/completion", "rustle/nothingHere", "initialize",
               "workspace/executeCommand"]
    notifications = ["rustle/didAccept", "rustle/didReject", "textDocument/didChange", "textDocument/didSave",
                     "textDocument/didOpen", "textDocument/didClose", "$/cancelRequest",
                     "workspace/didChangeWatchedFiles",
                     "workspace/didChangeConfiguration"]
    garbage = [b"{not json", b"[1, 2", b'{"jsonrpc": "2.0", "id": 7}', b"\xff\xfe\xfd", b"null", b"[]",
               b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": '
               b'{"uri": "file:///a.rs", '
               b'"languageId": "rust", "version": 1, "text": "fn \xc3\x28"}}}']
    next_id = first_id
    while True:
        kind = rng.choice(["request", "request", "request", "notify", "notify", "edit", "garbage", "huge", "framing"])
        if kind == "request":
            params = {"textDocument": {"uri": rng.choice(uris)}, "position": rng.choice(positions),
                      "context": rng.choice([{"triggerKind": 1}, None, "x", {"triggerKind": 99}]),
                      "command": rng.choice(["rustle.accepted", "rm -rf", 3]),
                      "arguments": rng.choice([None, [1], "x"])}
            message_id = rng.choice([next_id, str(next_id)])
            yield frame({"jsonrpc": "2.0", "id": message_id, "method": rng.choice(methods),
                         "params": rng.choice([params, params, None, [1, 2], "text", {}])}), next_id
            next_id += 1
        elif kind == "notify":
            yield frame({"jsonrpc": "2.0", "method": rng.choice(notifications),
                         "params": rng.choice([{"uri": 5}, None, {"textDocument": {"uri": "x"}}, [], {"id": next_id},
                                               {"textDocument": {"uri": rng.choice(uris), "text": "fn x() {}",
                                                                 "version": "v", "languageId": 1}},
                                               {"settings": {"rustle": {"maxTokens": -5, "model": "/nonexistent"}}},
                                               {"changes": [{"uri": rng.choice(uris), "type": 9}]}])}), None
        elif kind == "edit":   # an edit of the fuzzed document with a range anywhere, sane or not
            line = rng.choice([0, 1, 5, -1, 10 ** 6])
            yield frame({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": uri, "version": rng.randrange(-5, 10 ** 6)},
                "contentChanges": [{"range": {"start": {"line": line, "character": rng.choice([0, 3, 10 ** 5])},
                                              "end": {"line": line + rng.choice([0, 1, -2]), "character": 0}},
                                    "text": rng.choice(["x", "\n", "", "é\u2028", "}" * 1000])}]}}), None
        elif kind == "garbage":
            yield frame(rng.choice(garbage)), None
        elif kind == "huge":
            yield b"Content-Length: 99999999999999\r\n\r\n" + bytes(rng.randrange(256) for _ in range(50)), None
        else:   # framing a server must recover from; each is a `shutdown`-free request it must still answer
            message = {"jsonrpc": "2.0", "id": next_id, "method": "rustle/nothingHere", "params": {}}
            typed = b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n\r\n"
            header = rng.choice([b"content-length: %d\r\n\r\n", b"Content-Length: %d\n\n", typed])
            yield frame(message, header), next_id
            next_id += 1
            yield frame({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 1}}, extra=-7), None


class FuzzClient:
    """Writes frames to `rustle serve`; a reader thread collects its replies and answers its requests."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        env=env)
        self.lock = threading.Lock()
        self.replies: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.process.stdin.write(data)
            self.process.stdin.flush()

    def _read(self) -> None:
        out = self.process.stdout
        while True:
            length = 0
            while (line := out.readline()).strip():
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not length:
                return
            message = json.loads(out.read(length))
            if "method" in message and "id" in message:     # e.g. window/workDoneProgress/create
                self.write(frame({"jsonrpc": "2.0", "id": message["id"], "result": None}))
            elif "method" not in message:
                self.replies.put(message)

    def wait_for(self, ids: set[int], answers: dict[int, dict], timeout: float = 300.0) -> bool:
        """Replies (into `answers`, keyed by integer id) until those to all of `ids` arrived, or the timeout."""
        deadline = time.monotonic() + timeout
        while not ids <= answers.keys():
            try:
                reply = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if isinstance(reply.get("id"), (int, str)) and str(reply["id"]).isdigit():
                answers[int(reply["id"])] = reply
        return True


def session(messages: int, batch: int = 100, seed: int = 18, model: Path | None = None,
            every: int = 2000) -> FuzzReport:
    """`messages` hostile messages in batches of `batch`, a probe after each; RSS every `every` messages."""
    report = FuzzReport(messages)
    scratch = Path(tempfile.mkdtemp(prefix="rustle-fuzz-"))
    root = scratch / "workspace"
    (root / "src").mkdir(parents=True)
    (root / "src" / "probe.rs").write_text(PROBE_TEXT)
    (root / "src" / "fuzzed.rs").write_text("fn main() {\n    let value = \n}\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache")}
    client = FuzzClient([sys.executable, "-m", "assistant.cli", "serve"], env, scratch / "server.log")
    probe_uri, fuzzed_uri = (root / "src" / "probe.rs").as_uri(), (root / "src" / "fuzzed.rs").as_uri()
    answers: dict[int, dict] = {}
    started = time.perf_counter()
    options = {"rustle": {"debounceMs": 0, "maxTokens": 16, **({"model": str(model)} if model else {})}}
    client.write(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "processId": os.getpid(), "rootUri": root.as_uri(), "capabilities": {},
        "workspaceFolders": [{"uri": root.as_uri(), "name": "workspace"}], "initializationOptions": options}}))
    client.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
    for uri in (probe_uri, fuzzed_uri):
        text = (root / "src" / Path(uri).name).read_text()
        client.write(frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri, "languageId": "rust", "version": 1, "text": text}}}))
    hostile, probe_id, requests = hostile_messages(random.Random(seed), fuzzed_uri, 1_000_000), 10, set()
    try:
        sent = 0
        while True:
            probe_id += 1
            client.write(frame({"jsonrpc": "2.0", "id": probe_id, "method": "textDocument/inlineCompletion",
                                "params": {"textDocument": {"uri": probe_uri}, "position": PROBE_POSITION,
                                           "context": {"triggerKind": 1}}}))
            client.wait_for({probe_id}, answers)
            items = (answers.get(probe_id, {}).get("result") or {}).get("items") or [{}]
            text = items[0].get("insertText", "")
            report.probes += 1
            if report.probes == 1:
                report.probe_text = text
            report.probes_equal += text == report.probe_text
            if report.probes == 1 or sent >= messages or sent % every < batch:
                report.rss_mib.append((sent, round(rss_mib(client.process.pid), 1)))
            if sent >= messages:
                break
            chunk, asked = [], set()
            for data, request_id in hostile:
                chunk.append(data)
                if request_id is not None:
                    asked.add(request_id)
                if len(chunk) == min(batch, messages - sent):
                    break
            client.write(b"".join(chunk))
            # the probe after the batch's answers: a newer completion request cancels the one in flight (one
            # cursor, one suggestion), so a probe sent among the batch's own completions could rightly be cut
            client.wait_for(asked, answers, timeout=120.0)
            requests |= asked
            sent += len(chunk)
        client.write(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        client.wait_for({2}, answers)
        client.write(frame({"jsonrpc": "2.0", "method": "exit"}))
        report.exit_status = client.process.wait(timeout=120)
    finally:
        if client.process.poll() is None:
            client.process.kill()
        client.log.close()
        report.seconds = round(time.perf_counter() - started, 1)
    report.requests = len(requests)
    report.answered = len(requests & answers.keys())
    for i in requests & answers.keys():
        if "error" in answers[i]:
            code = str(answers[i]["error"].get("code"))
            report.errors[code] = report.errors.get(code, 0) + 1
    report.tracebacks = (scratch / "server.log").read_text(errors="replace").count("Traceback")
    shutil.rmtree(scratch, ignore_errors=True)
    return report
