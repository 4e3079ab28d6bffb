"""The workspace's code most like the lines before the cursor, shown right before the buffer (RepoCoder's retrieval,
Copilot's neighbouring snippets): windows of `lines` lines, every half window, of the other files and of the buffer
away from the cursor, ranked by the Jaccard similarity of their identifier sets with the `lines` whole lines above
the cursor's, each shown with the `after` lines that follow it (what came next there is what the cursor may want).

Why: the repository part holds every file, but up to 128K tokens back; the model reads what is near the cursor
(BENCHMARKS.md, issue 20). On the dev set the windows put the target line's text within a few hundred tokens of the
cursor for a third of the tasks; exact match 0.354 -> 0.360 there, and 0.300 -> 0.319 on the confirmation set. The
query leaves out the cursor's own line, so typing on a line keeps the same windows (and the state after them).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from .context import IDENTIFIER

T = TypeVar("T")


@dataclass(frozen=True)
class SimilarConfig:
    windows: int = 4          # windows shown at most (within PromptConfig.similar_tokens)
    lines: int = 10           # a window's lines, and the query's
    after: int = 10           # lines shown after a window
    least: float = 0.2        # the least Jaccard similarity a window needs


@dataclass(frozen=True)
class Window:
    path: str
    start: int                # its first line (0-based)
    score: float


@lru_cache(maxsize=1 << 14)
def _names(line: str) -> frozenset[str]:
    """A line's identifiers, remembered: a request splits the buffer into windows afresh (a few MB for a buffer's
    lines; the other files' windows are kept whole, in WindowCache)."""
    return frozenset(IDENTIFIER.findall(line))


def window_names(lines: list[str], size: int) -> list[tuple[int, frozenset[str]]]:
    """(first line, identifier set) of every window of `size` lines that starts on a multiple of half a window."""
    step = max(1, size // 2)
    return [(start, frozenset().union(*map(_names, lines[start:start + size])))
            for start in range(0, max(1, len(lines) - size + 1), step)]


def query_names(before_cursor: str, size: int) -> frozenset[str]:
    """The identifiers of the `size` whole lines above the cursor's line."""
    lines = before_cursor.split("\n")[:-1]
    return frozenset().union(*map(_names, lines[-size:])) if lines else frozenset()


def near_cursor(path: str, line: int, config: SimilarConfig) -> tuple[str, int, int]:
    """The buffer's lines a window and the lines shown after it stay clear of (`select`'s `skip`): the query's and
    the cursor's, a little more, and the ~11 lines after, which the prompt's prefix and suffix windows show anyway."""
    return path, line - config.lines - 2, line + 11


def select(query: frozenset[str], candidates: dict[str, list[tuple[int, frozenset[str]]]], config: SimilarConfig,
           budget: int, cost: Callable[[Window], int], skip: tuple[str, int, int] | None = None) -> list[Window]:
    """The windows of `candidates` (path → `window_names`) most like `query`, best first: at most `config.windows`
    whose `cost`s (tokens) fit `budget`, none overlapping another's shown lines; `skip` (path, first line, last
    line): lines a window and the lines shown after it must stay clear of (the buffer around the cursor)."""
    if not query:
        return []
    span = config.lines + config.after
    scored = []
    for path, windows in candidates.items():
        for start, names in windows:
            if skip is not None and path == skip[0] and start <= skip[2] and start + span > skip[1]:
                continue
            if names:
                score = len(query & names) / len(query | names)
                if score >= config.least:
                    scored.append(Window(path, start, score))
    scored.sort(key=lambda w: -w.score)     # stable: ties keep the files' order
    chosen: list[Window] = []
    used = 0
    for window in scored:
        if len(chosen) == config.windows:
            break
        if any(c.path == window.path and abs(c.start - window.start) < span for c in chosen):
            continue
        spent = cost(window)
        if used + spent <= budget:
            chosen.append(window)
            used += spent
    return chosen


def shown_text(lines: list[str], window: Window, config: SimilarConfig) -> str:
    """A window's lines and the lines after it, as a pseudo-file's text."""
    return "\n".join(lines[window.start:window.start + config.lines + config.after]) + "\n"


class WindowCache:
    """Each file's lines and windows, kept while its tokens are the same list (Workspace.file re-encodes a file
    into a new one when it changes)."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self._files: dict[str, tuple[list[int], int, list[str], list[tuple[int, frozenset[str]]]]] = {}
        self._last: tuple[tuple, list[list[int]], object] | None = None

    def remembered(self, key: tuple, files: list[list[int]], choose: Callable[[], T]) -> T:
        """`choose()`, or what it returned last when `key` and the files' tokens (the same lists) are the same: the
        windows stay while the user types on a line (ranking them anew took ~7 ms a keystroke on a 79K-token
        workspace)."""
        last = self._last
        if last is not None and last[0] == key and len(last[1]) == len(files) \
                and all(a is b for a, b in zip(last[1], files)):
            return last[2]
        chosen = choose()
        self._last = (key, files, chosen)
        return chosen

    def of(self, path: str, tokens: list[int], size: int) -> tuple[list[str], list[tuple[int, frozenset[str]]]]:
        """`path`'s lines and its windows of `size` lines."""
        cached = self._files.get(path)
        if cached is None or cached[0] is not tokens or cached[1] != size:
            lines = self.decode(tokens).split("\n")
            cached = (tokens, size, lines, window_names(lines, size))
            self._files[path] = cached
        return cached[2], cached[3]
