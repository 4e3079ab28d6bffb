"""Line completion, as data/eval/README.md specifies: remove `target` from its line, complete at the
cursor with the repository as the workspace, score the first line of the suggestion.

The file on disk holds the answer, so the repository context and the copy model read a stand-in for it
(`Request.overrides`): the file as saved before the cursor's line was typed, i.e. without that line; or
(`eval lines --saved cut`) the buffer itself, the line cut at the cursor, as an editor's auto-save leaves it.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LineTask:
    id: str
    root: Path
    path: str
    line: int
    character: int
    target: str
    kind: str

    def buffer(self) -> tuple[str, int]:
        """(the file with `target` removed from the end of its line, the cursor offset in characters)."""
        lines = (self.root / self.path).read_text(encoding="utf-8").split("\n")
        line = lines[self.line]
        if line[self.character:] != self.target:
            raise ValueError(f"task {self.id}: line {self.line} of {self.path} does not end with its target")
        lines[self.line] = line[:self.character]
        return "\n".join(lines), sum(len(x) + 1 for x in lines[:self.line]) + self.character


def saved_before_typing(buffer: str, offset: int) -> str:
    """`buffer` without the line the cursor is on."""
    start = buffer.rfind("\n", 0, offset) + 1
    end = buffer.find("\n", offset)
    return buffer[:start] + ("" if end < 0 else buffer[end + 1:])


def load_tasks(path: Path, limit: int | None = None) -> list[LineTask]:
    tasks = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            tasks.append(LineTask(row["id"], Path(row["root"]), row["path"], int(row["line"]), int(row["character"]),
                                  row["target"], row.get("kind", "line")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}:{n + 1}: not a task ({err})") from err
    return tasks[:limit]


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len): 1.0 for equal strings."""
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1 - previous[-1] / max(len(a), len(b))


@dataclass
class LineResult:
    id: str
    kind: str
    prediction: str
    target: str
    exact: bool
    similarity: float
    ms: float


def score(task: LineTask, suggestion: str, ms: float) -> LineResult:
    first = suggestion.split("\n", 1)[0].rstrip()
    target = task.target.rstrip()
    return LineResult(task.id, task.kind, first, target, first == target, edit_similarity(first, target), ms)


def run(tasks: list[LineTask], complete: Callable[[LineTask, str, int], tuple[str, float]]) -> Iterator[LineResult]:
    """`complete(task, buffer, offset)` → (suggestion, milliseconds)."""
    for task in tasks:
        buffer, offset = task.buffer()
        suggestion, ms = complete(task, buffer, offset)
        yield score(task, suggestion, ms)


def summary(results: list[LineResult]) -> dict:
    def block(rows: list[LineResult]) -> dict:
        return {"n": len(rows), "exact_match": statistics.mean(r.exact for r in rows) if rows else 0.0,
                "edit_similarity": statistics.mean(r.similarity for r in rows) if rows else 0.0,
                "p50_ms": statistics.median(r.ms for r in rows) if rows else 0.0,
                "mean_ms": statistics.mean(r.ms for r in rows) if rows else 0.0}
    kinds = sorted({r.kind for r in results})
    return block(results) | {"by_kind": {k: block([r for r in results if r.kind == k]) for k in kinds}}
