"""Bringing a workspace's index up to date: stat every file, read the changed ones in parallel, write in batches.

A file is re-read only when its mtime or size changed and then its content hash too; each batch of
files is one transaction, so a reader never sees half a file and a kill loses at most one batch. Worker
processes write what they read themselves: rows never cross a process boundary, whose pickling cost as much as
the writing. A new index is filled in bulk (bulk.py): each batch into a part database of its own, its rows written
by C where it can (rows.py), merged by the main process while the workers read on.
"""
from __future__ import annotations

import glob
import hashlib
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from . import bulk, rows, scan, store
from .parse import FileSymbols, parse_source, parser
from .workspace import module_path, rust_files

BATCH = 256          # files per transaction in one process
WORKER_BATCH = 32    # files per transaction of a worker process: small, so the writers take turns often
BULK_BATCH = 256     # files per part database in a bulk fill: each is merged while the workers read the next
BULK_MIN = 256       # a new index with at least this many files is filled in bulk


@dataclass
class IndexSummary:
    files: int = 0
    parsed: int = 0
    unchanged: int = 0
    removed: int = 0
    definitions: int = 0
    references: int = 0
    seconds: float = 0.0

    def add_written(self, part: "IndexSummary") -> None:
        """Count what a worker's batch wrote."""
        self.parsed += part.parsed
        self.unchanged += part.unchanged
        self.definitions += part.definitions
        self.references += part.references


@dataclass(frozen=True)
class Parsed:
    path: str
    mtime_ns: int
    size: int
    hash: str
    symbols: FileSymbols | None      # None when the content hash matched the stored one


_parser = None
MAX_SOURCE_BYTES = 4 << 20


def _parse_file(job: tuple[Path, str, str | None], folders: dict[str, bool] | None = None) -> Parsed | None:
    """One file's symbols; None for a file gone, no longer a regular file inside the root (resolved when read),
    or over MAX_SOURCE_BYTES (generated code, not worth the parse). `folders`: which folders lie inside the root,
    found so far in this batch."""
    root, rel, known_hash = job
    read = _read_inside(str(root), rel, {} if folders is None else folders)
    if read is None:
        return None
    stat, source = read
    digest = _digest(source)
    if digest == known_hash:
        return Parsed(rel, stat.st_mtime_ns, stat.st_size, digest, None)
    return Parsed(rel, stat.st_mtime_ns, stat.st_size, digest, read_symbols(source))


def _read_inside(root: str, rel: str, folders: dict[str, bool]) -> tuple[os.stat_result, bytes] | None:
    """A regular file's stat and bytes, if it lies inside the (resolved) root. A link is resolved; a plain file is
    opened without following a link swapped in for it, and only its folder is resolved, once per batch: resolving
    every path cost more than reading it."""
    path = os.path.join(root, rel)
    try:
        if os.path.islink(path):
            path = os.path.realpath(path, strict=True)
            inside = _is_inside(path, root)
        else:
            folder = os.path.dirname(path)
            if folder not in folders:
                folders[folder] = _is_inside(os.path.realpath(folder, strict=True), root)
            inside = folders[folder]
        if not inside:
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))  # no FIFO wait
    except (OSError, RuntimeError):
        return None
    with open(fd, "rb") as file:
        stat = os.fstat(fd)
        if not S_ISREG(stat.st_mode) or stat.st_size > MAX_SOURCE_BYTES:
            return None
        return stat, file.read()


def _digest(source: bytes) -> str:
    return hashlib.blake2b(source, digest_size=16).hexdigest()


def _is_inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def read_symbols(source: bytes) -> FileSymbols:
    """A file's symbols: scanned in C (scan.py) where a compiler built it, else parsed with tree-sitter."""
    global _parser
    if scan.available():
        return scan.scan_source(source)
    _parser = _parser or parser()
    return parse_source(source, _parser)


def _write(db: store.Connection, item: Parsed, next_id: int, search: bool) -> int:
    """Replace one file's rows (or only its stat, when its content is unchanged); returns the next symbol id."""
    if item.symbols is None:
        store.touch_file(db, item.path, item.mtime_ns, item.size)
        return next_id
    return store.write_file(db, item.path, module_path(Path(item.path)), item.mtime_ns, item.size, item.hash,
                            item.symbols, next_id, search)


def _apply(db: store.Connection, results: Iterable[Parsed | None], summary: IndexSummary,
           on_file: Callable[[], None], search: bool = True, batch: int = BATCH) -> None:
    pending = 0
    store.begin(db)
    try:
        next_id = store.next_symbol_id(db)     # inside the transaction: another writer may have taken ids
        for item in results:
            on_file()
            if item is None:
                continue
            next_id = _write(db, item, next_id, search)
            if item.symbols is None:
                summary.unchanged += 1
            else:
                summary.parsed += 1
                summary.definitions += len(item.symbols.definitions)
                summary.references += item.symbols.reference_count()
            pending += 1
            if pending >= batch:
                store.commit(db)
                store.begin(db)
                next_id, pending = store.next_symbol_id(db), 0
        store.commit(db)
    except BaseException:
        store.rollback(db)
        raise


_worker = None     # a worker process's (connection to the index, the writers' lock), or (None, the parts' folder)


def _open_worker(db_path: Path, parts: Path | None, lock) -> None:
    global _worker
    _worker = (store.writer(db_path), lock) if parts is None else (None, parts)


def _index_batch(jobs: list[tuple[Path, str, str | None]]) -> tuple[int, IndexSummary, Path | None]:
    """In a worker: a batch of files into the index (an update: parsed, then written in one transaction) or into a
    part database of its own (a bulk fill); (files done, what was written, the part for the main process to merge)."""
    target, shared = _worker
    if target is None:
        summary, part = _fill_part(jobs, shared)
        return len(jobs), summary, part
    summary = IndexSummary()
    folders: dict[str, bool] = {}
    parsed = [_parse_file(job, folders) for job in jobs]   # before the transaction: the lock is held only to write
    with shared:     # the writers queue here: SQLite's own busy wait sleeps up to 100 ms between tries
        _apply(target, parsed, summary, lambda: None, True, len(jobs))
    return len(jobs), summary, None


def _fill_part(jobs: list[tuple[Path, str, str | None]], folder: Path) -> tuple[IndexSummary, Path]:
    """A bulk fill's batch in a new part database: its rows written by C (rows.py) where it can, the rest (a file
    not in UTF-8, or no compiled scan) parsed and written by store.write_file after."""
    handle, name = tempfile.mkstemp(suffix=".sqlite", dir=folder)
    os.close(handle)
    part, summary, folders, rest = Path(name), IndexSummary(), {}, []
    bulk.part(part).close()
    writer = rows.PartWriter(part) if rows.available() else None
    try:
        for root, rel, known_hash in jobs:
            read = _read_inside(str(root), rel, folders)
            if read is None:
                continue
            stat, source = read
            digest = _digest(source)
            counts = None
            if writer is not None and digest != known_hash:
                counts = writer.write(rel, module_path(Path(rel)), stat.st_mtime_ns, stat.st_size, digest, source)
            if counts is None:
                rest.append((root, rel, known_hash))
                continue
            summary.parsed += 1
            summary.definitions, summary.references = summary.definitions + counts[0], summary.references + counts[1]
    except BaseException:
        if writer is not None:
            writer.close(commit=False)
        raise
    if writer is not None:
        writer.close()
    if rest:
        db = bulk.part(part)
        try:
            _apply(db, [_parse_file(job, folders) for job in rest], summary, lambda: None, False, len(rest))
        finally:
            db.close()
    return summary, part


def _index_in_workers(db: store.Connection, db_path: Path, jobs: list[tuple[Path, str, str | None]], workers: int,
                      filling: bool, summary: IndexSummary, on_file: Callable[[], None]) -> None:
    """Parse and write in worker processes. In a bulk fill each batch goes into a database of its own (bulk.part),
    merged here while the workers read on: writers taking turns on one file re-read each other's pages at every
    transaction and wrote at half the speed. An update writes the index itself, the workers queueing on a lock."""
    _remove_stale_parts(db_path)
    parts = None
    if filling:    # this run's own folder: another process may be filling the same index
        parts = Path(tempfile.mkdtemp(prefix=f"{db_path.name}.parts-{os.getpid()}-", dir=db_path.parent))
    size = BULK_BATCH if filling else WORKER_BATCH
    batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(workers, _open_worker, (db_path, parts, context.Lock())) as pool:
            for done, written, part in pool.imap_unordered(_index_batch, batches):
                if part is not None:
                    bulk.merge_part(db, part)
                    part.unlink()
                summary.add_written(written)
                for _ in range(done):
                    on_file()
    finally:
        if parts:
            shutil.rmtree(parts, ignore_errors=True)


def _remove_stale_parts(db_path: Path) -> None:
    """The part folders of fills killed before they merged (their process is gone)."""
    for folder in db_path.parent.glob(f"{glob.escape(db_path.name)}.parts-*"):
        try:
            os.kill(int(folder.name[len(db_path.name) + len(".parts-"):].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def index_workspace(root: Path, db_path: Path, workers: int | None = None,
                    on_total: Callable[[int], None] = lambda n: None, on_file: Callable[[], None] = lambda: None,
                    on_message: Callable[[str], None] = print, owned: bool = True) -> IndexSummary:
    """Bring the index up to date; damage found on the way (a failed quick check, a malformed page) moves it
    aside and rebuilds it once, with a message. `owned` False (a path the user named): an unusable file there
    raises store.CorruptIndex instead, untouched."""
    try:
        return _index_workspace(root, db_path, workers, on_total, on_file, on_message, owned)
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError) and "malformed" not in str(err) or not owned:
            raise  # locked, disk full, …: not damage; or not ours to move
        on_message(f"index damaged ({err}); moved to {store.move_aside(db_path).name}, rebuilding it")
        return _index_workspace(root, db_path, workers, on_total, on_file, on_message, owned)


def _index_workspace(root: Path, db_path: Path, workers: int | None, on_total: Callable[[int], None],
                     on_file: Callable[[], None], on_message: Callable[[str], None], owned: bool) -> IndexSummary:
    started = time.monotonic()
    root = root.resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    db = store.open_or_rebuild(db_path, on_message, owned, check=True)
    try:
        known = store.stored_files(db)
        present, jobs = set(), []
        summary = IndexSummary()
        for rel in rust_files(root):
            key = rel.as_posix()
            present.add(key)
            old = known.get(key)
            if old is None:       # a new file: its worker reads the stat with the file
                jobs.append((root, key, None))
                continue
            try:
                stat = os.stat(os.path.join(root, key))
            except OSError:
                continue
            if old[:2] == (stat.st_mtime_ns, stat.st_size):
                summary.unchanged += 1
                continue
            jobs.append((root, key, old[2]))
        summary.files = len(present)
        gone = [path for path in known if path not in present]
        if gone:
            store.begin(db)
            for path in gone:
                store.delete_file(db, path)
            store.commit(db)
        summary.removed = len(gone)
        on_total(len(jobs))
        filling = store.bulk_pending(db) or (not known and len(jobs) >= BULK_MIN)
        if filling:
            bulk.start(db)
        workers = workers or multiprocessing.cpu_count()
        if workers > 1 and len(jobs) > 64:
            _index_in_workers(db, db_path, jobs, workers, filling, summary, on_file)
        else:
            folders: dict[str, bool] = {}
            _apply(db, (_parse_file(job, folders) for job in jobs), summary, on_file, not filling)
        if filling:
            bulk.finish(db)
    finally:
        db.close()
    summary.seconds = time.monotonic() - started
    return summary


def index_file(root: Path, db_path: Path, relative: str) -> bool:
    """Re-index one file (a save, a watched-file event); False when it is gone or not part of the workspace."""
    root = root.resolve()
    path = (root / relative).resolve()
    db = store.open_or_rebuild(db_path)
    try:
        if not path.is_relative_to(root) or not path.is_file():
            store.begin(db)
            store.delete_file(db, relative)
            store.commit(db)
            return False
        item = _parse_file((root, relative, store.stored_hash(db, relative)))
        if item is None:
            return False
        _apply(db, [item], IndexSummary(), lambda: None)
        return True
    finally:
        db.close()
