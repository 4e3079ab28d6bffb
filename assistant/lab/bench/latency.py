"""Completion latency on a real repository: cold (fresh engine), warm (a new cursor, the repository state
cached) and per keystroke (the user types the next character of the line; the request before it is warm).

Cursors are the starts of code lines of one file, chosen with a seed; what follows the cursor on its
line is removed first, as when the line is being written.
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ...engine.engine import Engine, EngineConfig, Request


@dataclass
class LatencyReport:
    repo: str
    repo_tokens: int
    cold_ms: list[float]
    warm_ms: list[float]
    keystroke_ms: list[float]

    def summary(self) -> dict:
        def p(values: list[float], q: float) -> float:
            return statistics.quantiles(values, n=20)[int(q * 20) - 1] if len(values) > 1 else values[0]
        return {"repo": self.repo, "repo_tokens": self.repo_tokens,
                **{f"{name}_p50_ms": statistics.median(v) for name, v in
                   (("cold", self.cold_ms), ("warm", self.warm_ms), ("keystroke", self.keystroke_ms))},
                **{f"{name}_p95_ms": p(v, 0.95) for name, v in
                   (("warm", self.warm_ms), ("keystroke", self.keystroke_ms))},
                "cold_runs": len(self.cold_ms), "warm_runs": len(self.warm_ms), "keystrokes": len(self.keystroke_ms)}


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


def measure(root: Path, path: str, model: Path, config: EngineConfig, cold_runs: int = 2, cursors: int = 20,
            keystrokes: int = 20, seed: int = 0) -> LatencyReport:
    text = (root / path).read_text(encoding="utf-8")
    spots = _cursors(text, cursors, seed)
    cold = []
    for spot in spots[:cold_runs]:
        engine = Engine(model, config)
        engine.workspace(root).index()  # the server indexes before its first request
        started = time.perf_counter()
        engine.complete_sync(Request(root, path, _editing(text, spot), spot))
        cold.append(1000 * (time.perf_counter() - started))
    repo_tokens = engine.workspace(root).token_count()
    warm = [engine.complete_sync(Request(root, path, _editing(text, spot), spot)).ms for spot in spots]
    typed = []
    spot = spots[len(spots) // 2]
    line_end = text.find("\n", spot)
    for k in range(1, min(keystrokes, line_end - spot) + 1):  # type the original line, one character at a time
        buffer = text[:spot + k] + text[line_end:]
        typed.append(engine.complete_sync(Request(root, path, buffer, spot + k)).ms)
    return LatencyReport(f"{root.name}/{path}", repo_tokens, cold, warm, typed)
