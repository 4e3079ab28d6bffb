"""The index's SQLite file and every statement run on it: schema, opening (with corruption recovery), the
indexer's writes and the reads the prompt builder and the evaluations need. No SQL is written elsewhere, but for a
new index's bulk fill (bulk.py) and its rows written from C (rows.c: store.write_file's inserts, the same rows).

WAL mode, so readers (the language server, `rustle complete`) never block on the indexer and always
see the last committed batch; a kill mid-batch loses only that uncommitted batch. FTS5 over symbol
names, signatures and docs serves `--query`.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:     # parsing (tree-sitter) is the indexer's; readers of an index never load it
    from .parse import FileSymbols

Connection = sqlite3.Connection

SCHEMA_VERSION = "4"      # 2: calls inside macro arguments are references; 3: read by scan.c, full-text rows on
                          # the symbols table (external content) instead of a copy; 4: a reference row per name
                          # and file, the full-text index without positions
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, module TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL, indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS symbols (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, name TEXT NOT NULL, scope TEXT NOT NULL, trait TEXT NOT NULL,
    start_line INTEGER NOT NULL, start_col INTEGER NOT NULL, end_line INTEGER NOT NULL, end_col INTEGER NOT NULL,
    start_byte INTEGER NOT NULL, end_byte INTEGER NOT NULL, signature TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS symbols_name ON symbols(name);
CREATE INDEX IF NOT EXISTS symbols_file ON symbols(file_id);
CREATE TABLE IF NOT EXISTS imports (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE, path TEXT NOT NULL, line INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS imports_file ON imports(file_id);
CREATE TABLE IF NOT EXISTS refs (     -- a row per file, name and kind: "line:col line:col ..." (0-based), 4x fewer
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE, name TEXT NOT NULL, kind TEXT NOT NULL,
    places TEXT NOT NULL, PRIMARY KEY (file_id, name, kind)) WITHOUT ROWID;   -- clustered by file: no index
CREATE INDEX IF NOT EXISTS refs_name ON refs(name);
CREATE VIRTUAL TABLE IF NOT EXISTS symbol_search USING fts5(name, scope, signature, doc, content='symbols',
                                                              content_rowid='id', detail='none',
                                                              columnsize=0);
"""
# Dropped while a new index is first filled and built once at the end (connect() re-creates any that are missing)
SECONDARY_INDEXES = ("symbols_name", "symbols_file", "imports_file", "refs_name")


# A Symbol's columns, and them over every definition (a query adds its WHERE and ORDER BY)
SYMBOL_COLUMNS = "SELECT s.kind, s.name, s.scope, s.trait, f.path, s.start_line, s.end_line, s.signature, s.doc "
SYMBOLS = SYMBOL_COLUMNS + "FROM symbols s JOIN files f ON f.id = s.file_id "


SQLITE_HEADER = b"SQLite format 3\x00"


class CorruptIndex(Exception):
    """A file at an index's path that is not a sound Rustle index."""


class ForeignFile(CorruptIndex):
    """A file Rustle did not create (not SQLite, or a database without an index's tables): never written to."""


@dataclass(frozen=True)
class Symbol:
    kind: str
    name: str
    scope: str
    trait: str
    path: str
    start_line: int
    end_line: int
    signature: str
    doc: str


def connect(path: Path, check: bool = False, shared: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) an index; a file that is not a sound index raises CorruptIndex (ForeignFile
    before anything is written to one that Rustle did not create). `check`: SQLite's quick check of every page
    too (when indexing; not on a request's read). `shared`: usable from any thread (its owner serialises uses)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _refuse_non_sqlite(path)
    db = None
    try:
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=not shared)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not {"meta", "files", "symbols"} <= tables:      # before the first write below
            raise ForeignFile(f"{path} is a SQLite database but not a Rustle index")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        if "meta" not in tables or not bulk_pending(db):   # mid-fill, the dropped indexes stay dropped
            db.executescript(SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            raise CorruptIndex(f"{path}: schema {version[0]}, this version reads {SCHEMA_VERSION}")
        if check and (found := db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
            raise CorruptIndex(f"{path}: damaged ({found})")
    except (sqlite3.DatabaseError, CorruptIndex) as err:
        if db is not None:
            db.close()
        if isinstance(err, CorruptIndex):
            raise
        raise CorruptIndex(f"{path}: {err}") from err
    return db


def _refuse_non_sqlite(path: Path) -> None:
    """Raise ForeignFile for a non-empty file that does not start as a SQLite database does."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as err:
        raise ForeignFile(f"{path}: {err}") from err
    if head and head != SQLITE_HEADER:            # an empty file is a new index
        raise ForeignFile(f"{path} is not a SQLite database")


def move_aside(path: Path) -> Path:
    """Rename an unusable index (and its -wal and -shm files) beside itself; where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.unusable-{stamp}")
    n = 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.unusable-{stamp}-{n}"), n + 1
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    return aside


def writer(path: Path) -> sqlite3.Connection:
    """A second writer on an index that connect() has opened (an indexer's worker process): no schema work,
    so a bulk fill's dropped indexes stay dropped; concurrent writers take turns, one transaction each."""
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def open_or_rebuild(path: Path, on_message=print, owned: bool = True, check: bool = False,
                    shared: bool = False) -> sqlite3.Connection:
    """connect(), but an unusable file is moved aside with a message and a fresh index started. A path the user
    named (`owned` False: `--db FILE`) is never moved: CorruptIndex goes to the caller."""
    try:
        return connect(path, check, shared)
    except CorruptIndex as err:
        if not owned:
            raise
        aside = move_aside(path)
        on_message(f"index unusable ({err}); moved to {aside.name}, rebuilding it")
        return connect(path, shared=shared)


# ----- writes (the indexer's) ---------------------------------------------------------------------------------
def begin(db: Connection) -> None:
    db.execute("BEGIN IMMEDIATE")


def commit(db: Connection) -> None:
    db.execute("COMMIT")


def rollback(db: Connection) -> None:
    db.execute("ROLLBACK")


def stored_files(db: Connection) -> dict[str, tuple[int, int, str]]:
    """path -> (mtime_ns, size, content hash) of every indexed file."""
    return {path: (mtime, size, digest) for path, mtime, size, digest in
            db.execute("SELECT path, mtime_ns, size, hash FROM files")}


def stored_hash(db: Connection, path: str) -> str | None:
    row = db.execute("SELECT hash FROM files WHERE path = ?", (path,)).fetchone()
    return None if row is None else row[0]


def next_symbol_id(db: Connection) -> int:
    return db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM symbols").fetchone()[0]


def touch_file(db: Connection, path: str, mtime_ns: int, size: int) -> None:
    """A file whose content hash is unchanged: only its stat moves."""
    db.execute("UPDATE files SET mtime_ns = ?, size = ? WHERE path = ?", (mtime_ns, size, path))


def write_file(db: Connection, path: str, module: str, mtime_ns: int, size: int, digest: str,
               symbols: FileSymbols, next_id: int, search: bool = True) -> int:
    """Replace one file's rows; returns the next free symbol id. `search` False: no full-text rows (a bulk fill
    builds them all at its end)."""
    delete_file(db, path)
    file_id = db.execute("INSERT INTO files (path, module, mtime_ns, size, hash, indexed_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (path, module, mtime_ns, size, digest, time.time())).lastrowid
    defs = symbols.definitions
    ids = range(next_id, next_id + len(defs))
    db.executemany("INSERT INTO symbols VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",   # d: kind, name, scope,
                   [(i, file_id, *d[:4], *d[4], *d[5], *d[6:]) for i, d in zip(ids, defs)])  # trait, start, end, …
    if search:
        db.executemany("INSERT INTO symbol_search (rowid, name, scope, signature, doc) VALUES (?, ?, ?, ?, ?)",
                       [(i, d.name, d.scope, d.signature, d.doc) for i, d in zip(ids, defs)])
    db.executemany("INSERT INTO imports VALUES (?, ?, ?)", [(file_id, p, line) for p, line in symbols.imports])
    db.executemany("INSERT INTO refs VALUES (?, ?, ?, ?)", [(file_id, *group) for group in symbols.references])
    return next_id + len(defs)


def delete_file(db: Connection, path: str) -> None:
    """Remove a file and its rows (nothing when it is not indexed)."""
    row = db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
    if row is not None:
        db.execute("DELETE FROM symbol_search WHERE rowid IN (SELECT id FROM symbols WHERE file_id = ?)", (row[0],))
        db.execute("DELETE FROM files WHERE id = ?", (row[0],))  # symbols, imports, refs cascade


def bulk_pending(db: Connection) -> bool:
    return db.execute("SELECT 1 FROM meta WHERE key = 'search'").fetchone() is not None


# ----- reads ---------------------------------------------------------------------------------------------------
def file_paths(db: Connection) -> list[str]:
    """Every indexed file, sorted."""
    return [p for (p,) in db.execute("SELECT path FROM files ORDER BY path")]


def defining_files(db: Connection, kinds: tuple[str, ...]) -> dict[str, set[str]]:
    """name -> the files that define an item of one of `kinds` by that name."""
    defined: dict[str, set[str]] = {}
    for name, path in db.execute(f"SELECT name, f.path FROM symbols s JOIN files f ON f.id = s.file_id WHERE "
                                 f"kind IN ({','.join('?' * len(kinds))})", kinds):
        defined.setdefault(name, set()).add(path)
    return defined


def find(db: sqlite3.Connection, name: str, kinds: tuple[str, ...] | None = None, limit: int = 20) -> list[Symbol]:
    """Definitions named exactly `name`, type-like kinds first."""
    sql = SYMBOLS + "WHERE s.name = ?"
    args: list = [name]
    if kinds:
        sql += f" AND s.kind IN ({','.join('?' * len(kinds))})"
        args += kinds
    sql += " ORDER BY s.kind IN ('field', 'variant'), f.path, s.start_line LIMIT ?"
    return [Symbol(*row) for row in db.execute(sql, (*args, limit))]


def search(db: sqlite3.Connection, text: str, limit: int = 20) -> list[Symbol]:
    """Full-text search over names, scopes, signatures and docs (snake_case parts match on their own)."""
    terms = [t for t in text.replace("::", " ").replace("_", " ").split() if t.isidentifier() or t.isalnum()]
    if not terms:
        return []
    match = " ".join(f'"{t}"*' for t in terms)
    rows = db.execute(
        SYMBOL_COLUMNS + "FROM symbol_search JOIN symbols s ON s.id = symbol_search.rowid "
        "JOIN files f ON f.id = s.file_id "
        "WHERE symbol_search MATCH ? ORDER BY s.name != ?, rank LIMIT ?", (match, text, limit))
    return [Symbol(*row) for row in rows]


def members(db: sqlite3.Connection, type_name: str, limit: int = 40) -> list[Symbol]:
    """Methods and associated items of a type: everything defined inside its impl blocks."""
    rows = db.execute(
        SYMBOLS + "WHERE s.scope = ? AND s.kind IN ('fn', 'const', 'type') "
        "ORDER BY f.path, s.start_line LIMIT ?", (type_name, limit))
    return [Symbol(*row) for row in rows]


def type_member_names(db: sqlite3.Connection, type_name: str) -> list[str]:
    """What may follow `value.` or `Type::` for a type of the workspace: the items of its impl blocks and the
    fields and variants written inside its definition."""
    inside = db.execute(
        "SELECT m.name FROM symbols t JOIN symbols m ON m.file_id = t.file_id AND m.start_byte > t.start_byte "
        "AND m.end_byte <= t.end_byte AND m.kind IN ('field', 'variant') "
        "WHERE t.name = ? AND t.kind IN ('struct', 'enum', 'union')", (type_name,))
    return [s.name for s in members(db, type_name, limit=1 << 20)] + [n for (n,) in inside]


def module_item_names(db: sqlite3.Connection, module: str) -> list[str]:
    """The top-level items of the workspace modules named `module` (the last segment of their path)."""
    return [n for (n,) in db.execute(
        "SELECT DISTINCT s.name FROM symbols s JOIN files f ON f.id = s.file_id WHERE s.scope = '' "
        "AND s.kind NOT IN ('impl', 'field', 'variant') AND (f.module = ? OR f.module LIKE ?)",
        (module, f"%::{module}"))]


def item_names(db: sqlite3.Connection) -> list[str]:
    """Every name the workspace defines (items, members, fields, variants): what a bare identifier may be."""
    return [n for (n,) in db.execute("SELECT DISTINCT name FROM symbols WHERE kind != 'impl'")]


def file_symbols(db: sqlite3.Connection, path: str) -> list[Symbol]:
    rows = db.execute(
        SYMBOLS + "WHERE f.path = ? ORDER BY s.start_line", (path,))
    return [Symbol(*row) for row in rows]


def related_files(db: sqlite3.Connection, path: str) -> list[tuple[str, int]]:
    """Other files ranked by how many of this file's references they define: (path, shared names)."""
    return list(db.execute(
        "SELECT f.path, COUNT(DISTINCT s.name) AS n FROM refs r "
        "JOIN files me ON me.id = r.file_id AND me.path = ? "
        "JOIN symbols s ON s.name = r.name AND s.kind NOT IN ('field', 'variant') "
        "JOIN files f ON f.id = s.file_id AND f.path != ? GROUP BY f.path ORDER BY n DESC, f.path", (path, path)))


def fuzzy(db: sqlite3.Connection, pattern: str, limit: int = 20) -> list[Symbol]:
    """Definitions whose name holds `pattern`'s characters in order (case-insensitive), tightest matches first."""
    like = "%" + "%".join(c.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for c in pattern) + "%"
    rows = db.execute(
        SYMBOLS + "WHERE s.name LIKE ? ESCAPE '\\' AND s.kind != 'impl' "
        "ORDER BY lower(s.name) != lower(?), instr(lower(s.name), lower(?)) = 0, length(s.name), "
        "s.kind IN ('field', 'variant'), f.path, s.start_line LIMIT ?", (like, pattern, pattern, limit))
    return [Symbol(*row) for row in rows]


def references(db: sqlite3.Connection, name: str, limit: int = 100) -> list[tuple[str, int, int, str]]:
    """Where `name` is called or named as a type: (path, line, column, "call" | "type"), 0-based, in file order."""
    found: list[tuple[str, int, int, str]] = []
    rows = db.execute("SELECT f.path, r.kind, r.places FROM refs r JOIN files f ON f.id = r.file_id "
                      "WHERE r.name = ? ORDER BY f.path", (name,))
    for path, group in groupby(rows, key=lambda row: row[0]):
        places = sorted((*map(int, place.split(":")), kind) for _, kind, written in group
                        for place in written.split())
        found += [(path, line, column, kind) for line, column, kind in places]
        if len(found) >= limit:
            break
    return found[:limit]


def impl_blocks(db: sqlite3.Connection, trait_word: str, limit: int = 100) -> list[Symbol]:
    """`impl` blocks whose trait mentions `trait_word` (the caller keeps those whose trait's name it is)."""
    rows = db.execute(
        SYMBOLS + "WHERE s.kind = 'impl' AND instr(s.trait, ?) > 0 "
        "ORDER BY f.path, s.start_line LIMIT ?", (trait_word, limit))
    return [Symbol(*row) for row in rows]


def modules(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """(module path, file) of every indexed file, by module."""
    return list(db.execute("SELECT module, path FROM files ORDER BY module, path"))


def totals(db: sqlite3.Connection) -> tuple[int, int]:
    """(files, definitions) in the index."""
    return (db.execute("SELECT COUNT(*) FROM files").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM symbols WHERE kind != 'impl'").fetchone()[0])


def symbol_names(db: sqlite3.Connection, limit: int = 20000) -> list[str]:
    """Distinct definition names (tab completion), shortest first."""
    return [n for (n,) in db.execute("SELECT DISTINCT name FROM symbols WHERE kind != 'impl' "
                                     "ORDER BY length(name), name LIMIT ?", (limit,))]
