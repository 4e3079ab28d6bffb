"""Completion latency on a real repository, the server's way (the repository part prefilled in the
background and kept on disk) and the foreground way (`rustle complete`, `eval lines`):

- first open: a fresh engine and no saved state; the first suggestion (local context while the repository
  is prefilled) and the time until the whole repository is in the state tree;
- reopen: a fresh engine with the state the first open saved; the first suggestion with the repository (as
  soon as its part is loaded, while the document's lines are still being fed);
- new cursor: cursors of one file, one after another, the repository state held;
- keystroke: the user types the next character of a line (the request before it is warm);
- switch: a cursor in another file, then back to a cursor visited before (its branch of the state tree).
Cursors are the starts of code lines, chosen with a seed; what follows the cursor on its line is removed
first, as when the line is being written. The saved state goes to a temporary cache folder.
"""
from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kernels.attention import available as cpu_kernel_available

from ...engine.engine import Engine, EngineConfig, Request


@dataclass
class LatencyReport:
    repo: str
    repo_tokens: int
    first_local_ms: float          # first open: the first suggestion (local context)
    first_repo_ms: float           # first open: until the repository part is prefilled
    reopen_ms: float               # reopen: engine start to the first suggestion with the repository
    cursor_ms: list[float]
    keystroke_ms: list[float]
    switch_ms: list[float]         # back to a cursor of the first file after one in another file

    def summary(self) -> dict:
        def p(values: list[float], q: float) -> float:
            return statistics.quantiles(values, n=20)[int(q * 20) - 1] if len(values) > 1 else values[0]
        return {"repo": self.repo, "repo_tokens": self.repo_tokens, "first_local_ms": self.first_local_ms,
                "first_repo_ms": self.first_repo_ms, "reopen_ms": self.reopen_ms,
                **{f"{name}_p50_ms": statistics.median(v) for name, v in
                   (("cursor", self.cursor_ms), ("keystroke", self.keystroke_ms), ("switch", self.switch_ms))},
                **{f"{name}_p95_ms": p(v, 0.95) for name, v in
                   (("cursor", self.cursor_ms), ("keystroke", self.keystroke_ms), ("switch", self.switch_ms))},
                "cursors": len(self.cursor_ms), "keystrokes": len(self.keystroke_ms), "switches": len(self.switch_ms)}


def _cursors(text: str, n: int, seed: int) -> list[int]:
    starts, offset = [], 0
    for line in text.split("\n"):
        code = line.strip()
        if len(code) > 12 and not code.startswith("//"):
            starts.append(offset + len(line) - len(line.lstrip()))
        offset += len(line) + 1
    return sorted(random.Random(seed).sample(starts, min(n, len(starts))))


def _editing(text: str, cursor: int) -> str:
    """The buffer with everything after the cursor on its line removed."""
    end = text.find("\n", cursor)
    return text[:cursor] + ("" if end < 0 else text[end:])


def _at(root: Path, path: str, text: str, spot: int) -> Request:
    return Request(root, path, _editing(text, spot), spot)


def _started(model: Path, config: EngineConfig, root: Path, path: str) -> tuple[Engine, float]:
    """A server-like engine: indexed, its repository prefill started for the open document; and when."""
    started = time.perf_counter()
    engine = Engine(model, config)
    engine.workspace(root).index()
    engine.prefill_repository(root, path)
    return engine, started


def measure(root: Path, path: str, other: str, model: Path, config: EngineConfig, cursors: int = 20,
            keystrokes: int = 20, seed: int = 0) -> LatencyReport:
    text, other_text = ((root / p).read_text(encoding="utf-8") for p in (path, other))
    spots, other_spots = _cursors(text, cursors, seed), _cursors(other_text, cursors, seed)
    server = replace(config, background=True, persist=True)
    cpu_kernel_available()       # built once per machine, in the user's cache: not part of a workspace's first open
    previous = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache     # the index and the saved state, for this run only
        try:
            engine, started = _started(model, server, root, path)
            engine.complete_sync(_at(root, path, text, spots[0]))
            first_local = 1000 * (time.perf_counter() - started)
            engine.prefill.wait()
            first_repo = 1000 * (time.perf_counter() - started)
            engine, started = _started(model, server, root, path)
            engine.prefill.wait_ready(root.resolve())   # the saved repository part is in; the document's lines
                                                        # between its saved anchors are not yet
            engine.complete_sync(_at(root, path, text, spots[0]))
            reopen = 1000 * (time.perf_counter() - started)
            engine.prefill.wait()
            cursor = [engine.complete_sync(_at(root, path, text, spot)).ms for spot in spots]
            switch = []
            for spot, elsewhere in zip(spots, other_spots):
                engine.complete_sync(_at(root, other, other_text, elsewhere))
                switch.append(engine.complete_sync(_at(root, path, text, spot)).ms)
            typed = []
            spot = spots[len(spots) // 2]
            line_end = text.find("\n", spot)
            for k in range(1, min(keystrokes, line_end - spot) + 1):  # type the line, one character at a time
                buffer = text[:spot + k] + text[line_end:]
                typed.append(engine.complete_sync(Request(root, path, buffer, spot + k)).ms)
        finally:
            if previous is None:
                del os.environ["XDG_CACHE_HOME"]
            else:
                os.environ["XDG_CACHE_HOME"] = previous
    return LatencyReport(f"{root.name}/{path}", engine.workspace(root).token_count(), first_local, first_repo,
                         reopen, cursor, typed, switch)
