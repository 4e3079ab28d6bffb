"""The index against Universal Ctags on the same tree: wall time, what each stores, one-file re-index time."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ...index.indexer import index_file, index_workspace


@dataclass
class IndexBench:
    root: str
    files: int
    source_bytes: int
    ctags_seconds: float | None
    ctags_tags: int | None
    rustle_seconds: float
    rustle_workers: int
    rustle_definitions: int
    rustle_references: int
    rustle_db_bytes: int
    reindex_one_file_ms: float         # a file of median size: median over a few edits
    reindex_largest_file_ms: float     # the largest file of the tree
    largest_file_bytes: int
    noop_update_seconds: float         # nothing changed: stat every file


def run(root: Path, workers: int, edits: int = 5) -> IndexBench:
    root = root.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tags = Path(tmp) / "tags"
        ctags_seconds = ctags_tags = None
        if shutil.which("ctags"):
            started = time.perf_counter()
            subprocess.run(["ctags", "-R", "--languages=Rust", "-f", str(tags), str(root)], check=True,
                           capture_output=True)
            ctags_seconds = time.perf_counter() - started
            ctags_tags = sum(1 for line in tags.open(errors="replace") if not line.startswith("!_"))
        db = Path(tmp) / "index.sqlite"
        summary = index_workspace(root, db, workers, on_message=lambda m: None)
        noop = index_workspace(root, db, workers, on_message=lambda m: None)
        files = sorted((p for p in root.rglob("*.rs") if p.is_file()), key=lambda p: p.stat().st_size)
        typical = statistics.median(_edit_times(root, db, files[len(files) // 2], edits))
        largest = statistics.median(_edit_times(root, db, files[-1], 2))
        source_bytes = sum(p.stat().st_size for p in root.rglob("*.rs") if p.is_file())
        return IndexBench(str(root), summary.files, source_bytes, ctags_seconds, ctags_tags, summary.seconds, workers,
                          summary.definitions, summary.references, db.stat().st_size, typical, largest,
                          files[-1].stat().st_size, noop.seconds)


def _edit_times(root: Path, db: Path, victim: Path, edits: int) -> list[float]:
    """Milliseconds to re-index `victim` after each of a few appended edits; its content is restored after."""
    original = victim.read_bytes()
    times = []
    try:
        for n in range(edits):
            victim.write_bytes(original + f"\nfn bench_edit_{n}() {{}}\n".encode())
            started = time.perf_counter()
            index_file(root, db, victim.relative_to(root).as_posix())
            times.append(1000 * (time.perf_counter() - started))
    finally:
        victim.write_bytes(original)
    return times
