"""Accepted and rejected suggestions, kept locally in SQLite: the data for fine-tuning on what a team accepts.

The file is opened on the first verdict, not when the server starts; a write that fails (a damaged or
locked file) is logged and dropped, never raised into the server.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from assistant.engine.engine import cache_dir

from .protocol import Feedback

log = logging.getLogger("rustle.lsp")
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject')),
    uri TEXT NOT NULL, line INTEGER, character INTEGER, suggestion TEXT NOT NULL, accepted_text TEXT);
"""


def default_feedback_db() -> Path:
    return cache_dir() / "feedback.sqlite"


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self.db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            self.db = db
        return self.db

    def record(self, verdict: str, feedback: Feedback) -> None:
        """Store one verdict; a file that cannot take it gets a log line, not an exception."""
        where = feedback.position
        row = (time.time(), verdict, feedback.uri, where.line if where else None, where.character if where else None,
               feedback.text, feedback.accepted_text)
        try:
            self._open().execute("INSERT INTO feedback (at, verdict, uri, line, character, suggestion, "
                                 "accepted_text) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        except (sqlite3.Error, OSError) as err:
            log.warning("feedback not stored in %s: %s", self.path, err)
