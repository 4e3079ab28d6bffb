"""A line-completion task set from held-out crates, in the contract of data/eval/README.md.

Per crate (a folder on disk, used whole as the workspace), seeded:
- "line": the cursor after a line's indentation, the whole code of the line to write;
- "mid": the cursor after a token boundary inside a line (after `(`, `=`, `.`, `::`, a space);
- "xfile": the cursor right before an identifier defined only in another file of the crate.
Lines that are blank, comments, lone brackets or longer than 100 characters are never targets.
"""
from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

from ..corpus.manifest import Manifest
from ...index.indexer import index_workspace
from ...index.store import connect, defining_files, file_paths

CUT_AFTER = re.compile(r"[(=.,:] ?| ")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CROSS_FILE_KINDS = ("fn", "struct", "enum", "trait", "const", "static", "type", "macro")


def _candidate(line: str) -> bool:
    code = line.strip()
    return 8 <= len(code) <= 100 and not code.startswith(("//", "#", "*", "/*")) and WORD.search(code) is not None


def crate_tasks(root: Path, db_path: Path, rng: random.Random, per_kind: int) -> Iterator[dict]:
    index_workspace(root, db_path, workers=1, on_message=lambda m: None)
    db = connect(db_path)
    try:
        paths, defined = file_paths(db), defining_files(db, CROSS_FILE_KINDS)
    finally:
        db.close()
    lines_of = {p: (root / p).read_text(encoding="utf-8", errors="replace").split("\n") for p in paths}
    spots = [(p, i) for p in paths for i, line in enumerate(lines_of[p]) if _candidate(line)]
    rng.shuffle(spots)
    counts = {"line": 0, "mid": 0, "xfile": 0}
    for path, i in spots:
        line = lines_of[path][i]
        indent = len(line) - len(line.lstrip())
        task = None
        if counts["xfile"] < per_kind and not line.lstrip().startswith("use "):
            task = _cross_file(root, path, i, line, defined)
        if task is None and counts["line"] < per_kind and rng.random() < 0.5:
            task = _task(root, path, i, indent, line, "line")
        elif task is None and counts["mid"] < per_kind:
            cuts = [m.end() for m in CUT_AFTER.finditer(line) if indent < m.end() <= len(line) - 4]
            task = _task(root, path, i, rng.choice(cuts), line, "mid") if cuts else None
        if task is not None:
            counts[task["kind"]] += 1
            yield task
        if all(n >= per_kind for n in counts.values()):
            return


def _cross_file(root: Path, path: str, i: int, line: str, defined: dict[str, set[str]]) -> dict | None:
    for m in WORD.finditer(line):
        homes = defined.get(m.group(), set())
        if homes and path not in homes and len(line) - m.start() >= 4:
            return _task(root, path, i, m.start(), line, "xfile")
    return None


def _task(root: Path, path: str, line: int, character: int, text: str, kind: str) -> dict:
    return {"id": f"{root.name}/{path}:{line}:{character}", "root": str(root), "path": path, "line": line,
            "character": character, "target": text[character:], "kind": kind}


def test_crates(corpus: Path, min_files: int = 3, max_bytes: int = 400_000) -> list[Path]:
    """Folders of held-out (test split) crates small enough to be a workspace prefilled on a laptop."""
    if not (corpus / "manifest.sqlite").is_file():
        return []
    manifest = Manifest(corpus / "manifest.sqlite")
    try:
        rows = manifest.crates("test")
    finally:
        manifest.close()
    roots = []
    for abspath, files, size in rows:
        parts = Path(abspath).parts
        if "registry" in parts and files >= min_files and size <= max_bytes:
            roots.append(Path(*parts[:parts.index("registry") + 2]))
    return roots
