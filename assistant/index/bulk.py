"""Filling a new index fast: rows go into part databases without secondary indexes (one per batch of files, written
by a worker process), each part is merged into the index as it comes, and the indexes and the full-text rows are
built once at the end. A mark in `meta` (store.bulk_pending) survives a kill, so the next run finishes the fill.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .store import SCHEMA, SECONDARY_INDEXES, Connection, begin, commit, rollback

CACHE = -262144     # KiB of page cache for a bulk fill's connections: its merges and index builds spill less


def part(path: Path) -> sqlite3.Connection:
    """A batch's scratch database: the index's tables without their secondary indexes or journal; merge_part()
    moves its rows into the index."""
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=MEMORY")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(f"PRAGMA cache_size={CACHE}")
    db.executescript(SCHEMA)
    for name in SECONDARY_INDEXES:
        db.execute(f"DROP INDEX {name}")
    return db


def start(db: Connection) -> None:
    """A new index is about to be filled: rows go in without secondary indexes or full-text rows, several times
    faster; finish() builds both once."""
    db.execute(f"PRAGMA cache_size={CACHE}")
    begin(db)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('search', 'pending')")
    for name in SECONDARY_INDEXES:
        db.execute(f"DROP INDEX IF EXISTS {name}")
    commit(db)


def merge_part(db: Connection, path: Path) -> None:
    """Move a part's rows (part()) into the index in one transaction, its ids shifted past the index's own; a file
    the index holds already (a fill resumed after a kill) is replaced."""
    db.execute("ATTACH DATABASE ? AS part", (str(path),))
    try:
        begin(db)
        try:
            db.execute("DELETE FROM files WHERE path IN (SELECT path FROM part.files)")
            files, symbols = (db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
                              for table in ("files", "symbols"))
            db.execute("INSERT INTO files SELECT id + ?, path, module, mtime_ns, size, hash, indexed_at "
                       "FROM part.files", (files,))
            db.execute("INSERT INTO symbols SELECT id + ?, file_id + ?, kind, name, scope, trait, start_line, "
                       "start_col, end_line, end_col, start_byte, end_byte, signature, doc FROM part.symbols",
                       (symbols, files))
            db.execute("INSERT INTO imports SELECT file_id + ?, path, line FROM part.imports", (files,))
            db.execute("INSERT INTO refs SELECT file_id + ?, name, kind, places FROM part.refs", (files,))
            commit(db)
        except BaseException:
            rollback(db)
            raise
    finally:
        db.execute("DETACH DATABASE part")


def finish(db: Connection) -> None:
    """Build the secondary indexes and every full-text row (in one transaction) and clear the mark."""
    begin(db)
    try:
        for statement in SCHEMA.splitlines():
            if statement.startswith("CREATE INDEX"):
                db.execute(statement)
        db.execute("INSERT INTO symbol_search (symbol_search) VALUES ('rebuild')")   # from every symbols row
        db.execute("DELETE FROM meta WHERE key = 'search'")
        commit(db)
    except BaseException:
        rollback(db)
        raise
