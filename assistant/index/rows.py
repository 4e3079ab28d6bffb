"""A bulk fill's rows written by C (rows.c) straight into a part database: the scan, the rows and SQLite's inserts
without Python per row, where the Python path (scan.scan_source, then store.write_file) spent ~3/4 of a fill.

rows.c calls SQLite through the functions of the library Python's own sqlite3 module runs on (looked up here and
handed over), so the part is written by the same SQLite that merges it. Where there is no compiled scan, or those
functions cannot be found, `available()` is False and the fill writes through store.write_file.
"""
from __future__ import annotations

import ctypes
import os
import sqlite3
import time
from functools import lru_cache
from pathlib import Path

from . import scan
from .parse import SIGNATURE_CHARS

FUNCTIONS = ("open_v2", "close", "exec", "prepare_v2", "bind_int64", "bind_double", "bind_text", "step", "reset",
             "finalize", "last_insert_rowid")       # rows.c's Api, in order


@lru_cache(maxsize=1)
def _sqlite_functions() -> ctypes.Array | None:
    import _sqlite3          # its library resolves SQLite's functions, linked in or from libsqlite3

    try:
        sqlite = ctypes.CDLL(_sqlite3.__file__)
        addresses = [ctypes.cast(getattr(sqlite, f"sqlite3_{name}"), ctypes.c_void_p).value for name in FUNCTIONS]
    except (OSError, AttributeError):
        return None
    return (ctypes.c_void_p * len(FUNCTIONS))(*addresses)


def available() -> bool:
    return scan.available() and _sqlite_functions() is not None


class PartWriter:
    """rows.c's connection to one part database (bulk.part made its tables), in one transaction until close()."""

    def __init__(self, path: Path):
        self._lib = scan.library()
        self._handle = self._lib.rows_open(_sqlite_functions(), os.fsencode(path), SIGNATURE_CHARS,
                                           scan.SIGNATURE_WINDOW)
        if not self._handle:
            raise OSError(f"{path}: SQLite refused the part database")
        self._counts = (ctypes.c_int64 * 2)()

    def write(self, path: str, module: str, mtime_ns: int, size: int, digest: str,
              source: bytes) -> tuple[int, int] | None:
        """Write one file's rows; (definitions, references), or None for a file the Python path must write (not
        UTF-8, or a case rows.c leaves to it)."""
        try:
            names = path.encode(), module.encode()
        except UnicodeEncodeError:      # a file name that is not UTF-8: the Python path says so
            return None
        done = self._lib.rows_write(self._handle, *names, mtime_ns, size, digest.encode(), time.time(), source,
                                    len(source), self._counts)
        if done < 0:
            raise sqlite3.OperationalError(f"writing the rows of {path}: out of memory, or SQLite failed")
        return None if done else (self._counts[0], self._counts[1])

    def close(self, commit: bool = True) -> None:
        if self._handle:
            self._lib.rows_close(self._handle, int(commit))
            self._handle = None
