"""The corpus manifest: one SQLite row per `.rs` file seen, kept or dropped with its reason."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .filters import Examined
from .sources import SourceFile
from .split import SplitConfig, draw, split_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL, crate TEXT NOT NULL, version TEXT NOT NULL, license TEXT NOT NULL,
    path TEXT NOT NULL, abspath TEXT NOT NULL UNIQUE,
    bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    dropped TEXT,            -- NULL when kept, else the reason
    split TEXT,              -- train | validation | test, for kept files
    signature BLOB           -- MinHash of kept files, so an interrupted build resumes with its index
);
CREATE INDEX IF NOT EXISTS files_by_crate ON files (split, crate, version, path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Manifest:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def commit(self) -> None:
        self.db.commit()

    def seen(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT abspath FROM files")}

    def kept_signatures(self) -> Iterator[tuple[str, str, bytes]]:
        """(abspath, sha256, signature) of kept files, in the order they were kept."""
        yield from self.db.execute("SELECT abspath, sha256, signature FROM files WHERE dropped IS NULL ORDER BY id")

    def add(self, f: SourceFile, examined: Examined, dropped: str | None) -> None:
        self.db.execute(
            "INSERT INTO files (source, crate, version, license, path, abspath, bytes, sha256, dropped, signature)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (f.source, f.crate, f.version, f.license, f.path, f.abspath, examined.bytes, examined.sha256,
             dropped, examined.signature if dropped is None else None))

    def assign_splits(self, config: SplitConfig, train_only: set[str] = frozenset()) -> None:
        """Each kept file's split: by crate (or file) hash; a crate that only `train_only` sources hold: train; where
        other sources hold a crate name out (validation, test), the `train_only` sources' files of it are dropped."""
        if config.unit == "file":
            rows = list(self.db.execute("SELECT id, crate, path, bytes FROM files WHERE dropped IS NULL"))
            splits = {i: split_of(f"{crate}/{path}", config) for i, crate, path, _ in rows}
            trained = [(size, draw(f"{crate}/{path}", config), i) for i, crate, path, size in rows
                       if splits[i] == "train"]
            if config.validation > 0 and "validation" not in splits.values() and len(trained) > 1:
                # a small repository still holds one file out: its smallest, so that most of it is trained on
                splits[min(trained)[2]] = "validation"
            self.db.executemany("UPDATE files SET split = ? WHERE id = ?", [(s, i) for i, s in splits.items()])
        else:
            sources: dict[str, set[str]] = {}
            for crate, source in self.db.execute("SELECT DISTINCT crate, source FROM files WHERE dropped IS NULL"):
                sources.setdefault(crate, set()).add(source)
            splits = {c: "train" if held <= train_only else split_of(c, config) for c, held in sources.items()}
            self.db.executemany("UPDATE files SET split = ? WHERE crate = ? AND dropped IS NULL",
                                [(split, c) for c, split in splits.items()])
            held_out = [(c, source) for c, split in splits.items() if split != "train" for source in train_only]
            self.db.executemany("UPDATE files SET dropped = 'held_out_name', split = NULL, signature = NULL"
                                " WHERE crate = ? AND source = ? AND dropped IS NULL", held_out)
        self.db.commit()

    def kept(self, split: str) -> Iterator[sqlite3.Row]:
        """Kept files of one split, grouped by crate (a crate's files stay together for repository-level packing)."""
        cur = self.db.cursor()
        cur.row_factory = sqlite3.Row
        yield from cur.execute("SELECT * FROM files WHERE dropped IS NULL AND split = ? ORDER BY crate, version, path",
                               (split,))

    def drop(self, abspath: str, reason: str) -> None:
        self.db.execute("UPDATE files SET dropped = ?, split = NULL, signature = NULL WHERE abspath = ?",
                        (reason, abspath))

    def split_counts(self) -> list[tuple[str, int, int, int]]:
        """(split, crates, files, bytes) of kept files."""
        return list(self.db.execute(
            "SELECT split, COUNT(DISTINCT crate), COUNT(*), SUM(bytes) FROM files WHERE dropped IS NULL"
            " GROUP BY split ORDER BY split"))

    def source_counts(self) -> list[tuple[str, str, int, int, int]]:
        """(source, split, crates, files, bytes) of kept files: what each source adds to each split."""
        return list(self.db.execute(
            "SELECT source, split, COUNT(DISTINCT crate), COUNT(*), SUM(bytes) FROM files WHERE dropped IS NULL"
            " GROUP BY source, split ORDER BY source, split"))

    def drop_counts(self) -> list[tuple[str, int, int]]:
        """(reason, files, bytes) of dropped files."""
        return list(self.db.execute(
            "SELECT dropped, COUNT(*), SUM(bytes) FROM files WHERE dropped IS NOT NULL "
            "GROUP BY dropped ORDER BY 2 DESC"))

    def crates(self, split: str) -> list[tuple[str, int, int]]:
        """(first file's abspath, files, bytes) of every kept crate version of a split, by crate name."""
        return list(self.db.execute(
            "SELECT MIN(abspath), COUNT(*), SUM(bytes) FROM files WHERE split = ? AND dropped IS NULL "
            "GROUP BY crate, version ORDER BY crate, version", (split,)))

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        self.db.commit()


def read_meta(path: Path, key: str) -> str | None:
    """One meta value of the manifest at `path`, opened read-only; None when the file or the key is missing."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None
