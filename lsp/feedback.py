"""Accepted and rejected suggestions, kept locally in SQLite: the data for fine-tuning on what a team accepts.

The file is opened on the first verdict, not when the server starts, and written on a worker thread (the
server awaits it off its event loop). A damaged or foreign file is moved aside and a fresh store started, as
the index does; a write still blocked by another writer after a retry is logged and counted, never raised
into the server.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
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
    def __init__(self, path: Path, busy_seconds: float = 2.0) -> None:
        self.path, self.busy_seconds = path, busy_seconds
        self.db: sqlite3.Connection | None = None
        self.lock = threading.Lock()        # one write at a time, whichever thread runs it
        self.dropped = 0                    # verdicts that could not be stored

    def _open(self) -> sqlite3.Connection:
        if self.db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_seconds, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                db.execute("SELECT at, verdict, uri, line, character, suggestion, accepted_text FROM feedback LIMIT 0")
            except sqlite3.Error:
                db.close()
                raise
            self.db = db
        return self.db

    def record(self, verdict: str, feedback: Feedback) -> bool:
        """Store one verdict (blocking: servers call it on a worker thread); False when it could not be. A
        damaged file is moved aside and the verdict written to a fresh one; a busy one is retried once."""
        where = feedback.position
        row = (time.time(), verdict, feedback.uri, where.line if where else None, where.character if where else None,
               feedback.text, feedback.accepted_text)
        with self.lock:
            for attempt in range(2):
                try:
                    self._open().execute("INSERT INTO feedback (at, verdict, uri, line, character, suggestion, "
                                         "accepted_text) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                    return True
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err) and "busy" not in str(err):
                        self._move_aside(err)
                    problem = err
                except (sqlite3.DatabaseError, OSError) as err:   # not a database, malformed, unreadable
                    self._move_aside(err)
                    problem = err
            self.dropped += 1
            log.warning("feedback not stored in %s (%d dropped so far): %s", self.path, self.dropped, problem)
            return False

    def _move_aside(self, err: Exception) -> None:
        """Close the store and rename its file (and -wal, -shm) beside it; the next write starts a fresh one."""
        if self.db is not None:
            self.db.close()
            self.db = None
        aside = self.path.with_name(f"{self.path.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(f"{self.path}{suffix}").rename(f"{aside}{suffix}")
            except OSError:
                pass
        log.warning("feedback store %s unusable (%s): moved to %s", self.path, err, aside.name)
