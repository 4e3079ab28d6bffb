"""One workspace as the engine sees it: its index, its files' tokens and its copy table, kept current by
changes (rust-analyzer's `AnalysisHost.apply_change`). The one owner of "is this workspace indexed".

Reads of the index go through `assistant/index/store.py`; this module writes no SQL.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..index import store
from ..index.indexer import IndexSummary, index_file, index_workspace
from .copy import CopyConfig, CopyModel
from .guide import Names
from .similar import WindowCache
from .tokens import Vocab

RECENT = 16  # recently saved files the "index" context ranks after the cursor's own names
MAX_FILE_BYTES = 1 << 20   # a workspace file larger than this stays out of prompts (generated or data, not code)


@dataclass(frozen=True)
class Change:
    """A file of the workspace changed on disk."""
    path: str                  # relative to the root, posix
    kind: str = "saved"        # "saved" | "created" | "deleted" (a watched-file event or a save)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_dev


class Workspace:
    def __init__(self, root: Path, vocab: Vocab, db_path: Path) -> None:
        self.root, self.vocab, self.db_path = root.resolve(), vocab, db_path
        self._root_text = str(self.root)
        self.indexed = False
        self.recent: list[str] = []
        self._tokens: dict[str, tuple[object, list[int]]] = {}
        self._copy: CopyModel | None = None
        self._copy_key: tuple | None = None
        self.changes = 0                     # index updates so far: the names' caches follow them
        self._reader: store.Connection | None = None
        self._reader_identity: tuple[int, int] | None = None
        self._reader_lock = threading.RLock()  # the server's thread and the engine's worker read in turn
        self.names = Names(self.reading, lambda: self.changes)
        self.windows = WindowCache(lambda ids: vocab.decode_bytes(ids).decode("utf-8", errors="replace"))

    # ----- the index ----------------------------------------------------------------------------------------
    def index(self, on_file: Callable[[], None] = lambda: None,
              on_message: Callable[[str], None] = lambda m: None) -> IndexSummary:
        """Bring the whole index up to date (the first request does this when nobody did before)."""
        summary = index_workspace(self.root, self.db_path, on_file=on_file, on_message=on_message)
        self.indexed = True
        self.changes += 1
        return summary

    def apply_change(self, change: Change) -> None:
        """Re-index the changed file; token caches and the copy table follow on the next request."""
        index_file(self.root, self.db_path, change.path)
        self.changes += 1
        self.recent = [p for p in self.recent if p != change.path][-(RECENT - 1):]
        if change.kind != "deleted":
            self.recent.append(change.path)

    @contextmanager
    def reading(self) -> Iterator[store.Connection]:
        """A connection to the up-to-date index, for the store's reads: one kept across requests (opening one, with
        its schema check, cost ~2 ms a request), opened again when the file is another (moved aside, rebuilt).
        SQLite shows a kept connection every write committed before each read."""
        if not self.indexed:
            self.index()
        with self._reader_lock:
            identity = _identity(self.db_path)
            if self._reader is None or identity != self._reader_identity:
                if self._reader is not None:
                    self._reader.close()
                self._reader = store.open_or_rebuild(self.db_path, on_message=lambda m: None, shared=True)
                self._reader_identity = _identity(self.db_path)
            yield self._reader

    # ----- tokens ----------------------------------------------------------------------------------------------
    def file(self, path: str, overrides: dict[str, str]) -> tuple[int, list[int]]:
        """A file's last save (st_mtime_ns; 0 when unreadable) and its tokens: an unsaved buffer's (`overrides`) or
        the disk's, re-encoded when either changes. One stat per file and request: this runs for every file of the
        workspace on every keystroke."""
        try:
            stat = os.stat(os.path.join(self._root_text, path))
        except (OSError, ValueError):
            stat = None
        mtime = stat.st_mtime_ns if stat is not None else 0
        if path in overrides:
            key: object = ("override", hash(overrides[path]))
            read = lambda: overrides[path]  # noqa: E731
        else:
            if stat is None:
                return mtime, []
            # the stat follows links: a file swapped for a link out of the workspace has another inode, so it
            # misses the cache and is resolved below before anything is read
            key = (stat.st_ino, stat.st_dev, stat.st_mtime_ns, stat.st_size)
            cached = self._tokens.get(path)
            if cached is not None and cached[0] == key:
                return mtime, cached[1]
            try:
                real = (self.root / path).resolve()
            except (OSError, RuntimeError):
                return mtime, []
            if not real.is_relative_to(self.root) or not real.is_file() or stat.st_size > MAX_FILE_BYTES:
                return mtime, []
            read = lambda: real.read_text(encoding="utf-8", errors="replace")  # noqa: E731
        cached = self._tokens.get(path)
        if cached is None or cached[0] != key:
            cached = (key, self.vocab.encode(read()))
            self._tokens[path] = cached
        return mtime, cached[1]

    def copy_model(self, paths: list[str], config: CopyConfig) -> CopyModel:
        """The n-gram table of `paths`, whose tokens `file()` has just brought up to date (rebuilt on change)."""
        cached = [(p, self._tokens[p]) for p in paths if p in self._tokens]
        key = tuple((p, version) for p, (version, _) in cached)
        if self._copy is None or self._copy_key != key:
            copy = CopyModel(config)
            for p, (_, tokens) in cached:
                copy.extend(self.vocab.file_header(p) + tokens)
            self._copy, self._copy_key = copy, key
        return self._copy

    def token_count(self) -> int:
        """Tokens of the files read so far (the repository part of the last prompt)."""
        return sum(len(tokens) for _, tokens in self._tokens.values())
