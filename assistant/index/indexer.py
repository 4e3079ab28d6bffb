"""Bringing a workspace's index up to date: stat every file, read the changed ones in parallel, write in batches.

A file is re-read only when its mtime or size changed and then its content hash too; each batch of
files is one transaction, so a reader never sees half a file and a kill loses at most one batch. Worker
processes write what they read themselves: rows never cross a process boundary, whose pickling cost as much as
the writing. A new index is filled in bulk (store.start_bulk), each worker into a database of its own.
"""
from __future__ import annotations

import contextlib
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

from . import scan, store
from .parse import FileSymbols, parse_source, parser
from .workspace import module_path, rust_files

BATCH = 256          # files per transaction in one process
WORKER_BATCH = 32    # files per transaction of a worker process: small, so the writers take turns often
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


def _parse_file(job: tuple[Path, str, str | None]) -> Parsed | None:
    """One file's symbols; None for a file gone, no longer a regular file inside the root (resolved when read),
    or over MAX_SOURCE_BYTES (generated code, not worth the parse)."""
    root, rel, known_hash = job
    try:
        path = (root / rel).resolve(strict=True)
        stat = path.stat()
        if not path.is_relative_to(root) or not path.is_file() or stat.st_size > MAX_SOURCE_BYTES:
            return None
        source = path.read_bytes()
    except (OSError, RuntimeError):
        return None
    digest = hashlib.blake2b(source, digest_size=16).hexdigest()
    if digest == known_hash:
        return Parsed(rel, stat.st_mtime_ns, stat.st_size, digest, None)
    return Parsed(rel, stat.st_mtime_ns, stat.st_size, digest, read_symbols(source))


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
                summary.references += len(item.symbols.references)
            pending += 1
            if pending >= batch:
                store.commit(db)
                store.begin(db)
                next_id, pending = store.next_symbol_id(db), 0
        store.commit(db)
    except BaseException:
        store.rollback(db)
        raise


_worker = None     # a worker process's connection, `search`, and the lock the writers of one index share


def _open_worker(db_path: Path, parts: Path | None, lock) -> None:
    global _worker
    if parts is None:
        _worker = (store.writer(db_path), True, lock)
    else:
        _worker = (store.part(parts / f"{os.getpid()}.sqlite"), False, contextlib.nullcontext())


def _index_batch(jobs: list[tuple[Path, str, str | None]]) -> tuple[int, IndexSummary]:
    """In a worker: parse and write a batch of files in one transaction; (files done, what was written)."""
    db, search, lock = _worker
    summary = IndexSummary()
    parsed = [_parse_file(job) for job in jobs]      # before the transaction: the lock is held only to write
    with lock:     # the writers queue here: SQLite's own busy wait sleeps up to 100 ms between tries
        _apply(db, parsed, summary, lambda: None, search, len(jobs))
    return len(jobs), summary


def _index_in_workers(db: store.Connection, db_path: Path, jobs: list[tuple[Path, str, str | None]], workers: int,
                      bulk: bool, summary: IndexSummary, on_file: Callable[[], None]) -> None:
    """Parse and write in worker processes. In a bulk fill each worker writes a database of its own (store.part),
    merged here at the end: writers taking turns on one file re-read each other's pages at every transaction and
    wrote at half the speed. An update writes the index itself, the workers queueing on a lock."""
    _remove_stale_parts(db_path)
    parts = None
    if bulk:    # this run's own folder: another process may be filling the same index
        parts = Path(tempfile.mkdtemp(prefix=f"{db_path.name}.parts-{os.getpid()}-", dir=db_path.parent))
    batches = [jobs[i:i + WORKER_BATCH] for i in range(0, len(jobs), WORKER_BATCH)]
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(workers, _open_worker, (db_path, parts, context.Lock())) as pool:
            for done, written in pool.imap_unordered(_index_batch, batches):
                summary.add_written(written)
                for _ in range(done):
                    on_file()
        for part in sorted(parts.iterdir()) if parts else []:
            store.merge_part(db, part)
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
            try:
                stat = os.stat(os.path.join(root, key))
            except OSError:
                continue
            old = known.get(key)
            if old is not None and old[:2] == (stat.st_mtime_ns, stat.st_size):
                summary.unchanged += 1
                continue
            jobs.append((root, key, None if old is None else old[2]))
        summary.files = len(present)
        gone = [path for path in known if path not in present]
        if gone:
            store.begin(db)
            for path in gone:
                store.delete_file(db, path)
            store.commit(db)
        summary.removed = len(gone)
        on_total(len(jobs))
        bulk = store.bulk_pending(db) or (not known and len(jobs) >= BULK_MIN)
        if bulk:
            store.start_bulk(db)
        workers = workers or multiprocessing.cpu_count()
        if workers > 1 and len(jobs) > 64:
            _index_in_workers(db, db_path, jobs, workers, bulk, summary, on_file)
        else:
            _apply(db, map(_parse_file, jobs), summary, on_file, not bulk)
        if bulk:
            store.finish_bulk(db)
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
