"""Bringing a workspace's index up to date: stat every file, parse the changed ones in parallel, write in batches.

A file is re-parsed only when its mtime or size changed and then its content hash too; each batch of
files is one transaction, so a reader never sees half a file and a kill loses at most one batch.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .parse import FileSymbols, parse_source, parser
from .store import open_or_rebuild, remove
from .workspace import module_path, rust_files

BATCH = 256


@dataclass
class IndexSummary:
    files: int = 0
    parsed: int = 0
    unchanged: int = 0
    removed: int = 0
    definitions: int = 0
    references: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Parsed:
    path: str
    mtime_ns: int
    size: int
    hash: str
    symbols: FileSymbols | None      # None when the content hash matched the stored one


_parser = None


def _parse_file(job: tuple[Path, str, str | None]) -> Parsed | None:
    global _parser
    root, rel, known_hash = job
    path = root / rel
    try:
        stat = path.stat()
        source = path.read_bytes()
    except OSError:
        return None
    digest = hashlib.blake2b(source, digest_size=16).hexdigest()
    if digest == known_hash:
        return Parsed(rel, stat.st_mtime_ns, stat.st_size, digest, None)
    _parser = _parser or parser()
    return Parsed(rel, stat.st_mtime_ns, stat.st_size, digest, parse_source(source, _parser))


def _write(db: sqlite3.Connection, item: Parsed, next_id: int) -> int:
    """Replace one file's rows; returns the next free symbol id."""
    old = db.execute("SELECT id FROM files WHERE path = ?", (item.path,)).fetchone()
    if item.symbols is None:
        db.execute("UPDATE files SET mtime_ns = ?, size = ? WHERE path = ?", (item.mtime_ns, item.size, item.path))
        return next_id
    if old is not None:
        _delete(db, old[0])
    file_id = db.execute("INSERT INTO files (path, module, mtime_ns, size, hash, indexed_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (item.path, module_path(Path(item.path)), item.mtime_ns, item.size, item.hash,
                          time.time())).lastrowid
    defs = item.symbols.definitions
    ids = range(next_id, next_id + len(defs))
    db.executemany("INSERT INTO symbols VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(i, file_id, d.kind, d.name, d.scope, d.trait, *d.start, *d.end, d.start_byte, d.end_byte,
                     d.signature, d.doc) for i, d in zip(ids, defs)])
    db.executemany("INSERT INTO symbol_search (rowid, name, scope, signature, doc) VALUES (?, ?, ?, ?, ?)",
                   [(i, d.name, d.scope, d.signature, d.doc) for i, d in zip(ids, defs)])
    db.executemany("INSERT INTO imports VALUES (?, ?, ?)", [(file_id, p, line) for p, line in item.symbols.imports])
    db.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, ?)",
                   [(file_id, r.name, r.kind, r.line, r.column) for r in item.symbols.references])
    return next_id + len(defs)


def _delete(db: sqlite3.Connection, file_id: int) -> None:
    db.execute("DELETE FROM symbol_search WHERE rowid IN (SELECT id FROM symbols WHERE file_id = ?)", (file_id,))
    db.execute("DELETE FROM files WHERE id = ?", (file_id,))  # symbols, imports, refs cascade


def _apply(db: sqlite3.Connection, results: Iterable[Parsed | None], summary: IndexSummary,
           on_file: Callable[[], None]) -> None:
    next_id = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM symbols").fetchone()[0]
    pending = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for item in results:
            on_file()
            if item is None:
                continue
            next_id = _write(db, item, next_id)
            if item.symbols is None:
                summary.unchanged += 1
            else:
                summary.parsed += 1
                summary.definitions += len(item.symbols.definitions)
                summary.references += len(item.symbols.references)
            pending += 1
            if pending >= BATCH:
                db.execute("COMMIT")
                db.execute("BEGIN IMMEDIATE")
                pending = 0
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def index_workspace(root: Path, db_path: Path, workers: int | None = None,
                    on_total: Callable[[int], None] = lambda n: None, on_file: Callable[[], None] = lambda: None,
                    on_message: Callable[[str], None] = print) -> IndexSummary:
    """Bring the index up to date; damage found on the way (a malformed page) rebuilds it once, with a message."""
    try:
        return _index_workspace(root, db_path, workers, on_total, on_file, on_message)
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError) and "malformed" not in str(err):
            raise  # locked, disk full, …: not damage
        on_message(f"index damaged ({err}); rebuilding it")
        remove(db_path)
        return _index_workspace(root, db_path, workers, on_total, on_file, on_message)


def _index_workspace(root: Path, db_path: Path, workers: int | None, on_total: Callable[[int], None],
                     on_file: Callable[[], None], on_message: Callable[[str], None]) -> IndexSummary:
    started = time.monotonic()
    root = root.resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    db = open_or_rebuild(db_path, on_message)
    try:
        known = {path: (mtime, size, digest) for path, mtime, size, digest in
                 db.execute("SELECT path, mtime_ns, size, hash FROM files")}
        present, jobs = set(), []
        summary = IndexSummary()
        for rel in rust_files(root):
            key = rel.as_posix()
            present.add(key)
            try:
                stat = (root / rel).stat()
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
            db.execute("BEGIN IMMEDIATE")
            for path in gone:
                _delete(db, db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()[0])
            db.execute("COMMIT")
        summary.removed = len(gone)
        on_total(len(jobs))
        workers = workers or multiprocessing.cpu_count()
        if workers > 1 and len(jobs) > 64:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                _apply(db, pool.imap_unordered(_parse_file, jobs, chunksize=16), summary, on_file)
        else:
            _apply(db, map(_parse_file, jobs), summary, on_file)
    finally:
        db.close()
    summary.seconds = time.monotonic() - started
    return summary


def index_file(root: Path, db_path: Path, relative: str) -> bool:
    """Re-index one file (a save, a watched-file event); False when it is gone or not part of the workspace."""
    root = root.resolve()
    path = (root / relative).resolve()
    db = open_or_rebuild(db_path)
    try:
        if not path.is_relative_to(root) or not path.is_file():
            row = db.execute("SELECT id FROM files WHERE path = ?", (relative,)).fetchone()
            if row is not None:
                db.execute("BEGIN IMMEDIATE")
                _delete(db, row[0])
                db.execute("COMMIT")
            return False
        old = db.execute("SELECT hash FROM files WHERE path = ?", (relative,)).fetchone()
        item = _parse_file((root, relative, None if old is None else old[0]))
        if item is None:
            return False
        _apply(db, [item], IndexSummary(), lambda: None)
        return True
    finally:
        db.close()
