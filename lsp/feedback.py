"""Accepted and rejected suggestions, kept locally in SQLite: the data for fine-tuning on what a team accepts."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject')),
    uri TEXT NOT NULL, line INTEGER, character INTEGER, suggestion TEXT NOT NULL, accepted_text TEXT);
"""


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def record(self, verdict: str, uri: str, line: int | None, character: int | None, suggestion: str,
               accepted_text: str | None = None) -> None:
        self.db.execute("INSERT INTO feedback (at, verdict, uri, line, character, suggestion, accepted_text) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (time.time(), verdict, uri, line, character, suggestion,
                                                         accepted_text))

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT verdict, COUNT(*) FROM feedback GROUP BY verdict").fetchall())

    def close(self) -> None:
        self.db.close()
