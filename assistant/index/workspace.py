"""Which files make up a workspace: every `.rs` under the root, honouring `.gitignore`, never leaving the root."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pathspec

SKIP_DIRS = {"target", ".git", ".hg", ".svn", "node_modules", ".rustle"}


def cache_dir() -> Path:
    """Rustle's folder in the user's cache ($XDG_CACHE_HOME/rustle): indexes, feedback."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rustle"


def default_db(root: Path) -> Path:
    """Indexes live in the user's cache, not in the workspace: one SQLite file per workspace root."""
    key = hashlib.blake2b(str(root.resolve()).encode(), digest_size=8).hexdigest()
    return cache_dir() / "index" / f"{root.resolve().name}-{key}.sqlite"


MAX_IGNORE_BYTES = 1 << 20   # a .gitignore is read up to this much


def _ignore_spec(folder: Path, root: Path) -> pathspec.PathSpec | None:
    """The folder's .gitignore, read only if it is a regular file inside the root (a link to /dev/zero or out
    of the workspace, or a FIFO, is not read), and only its first MAX_IGNORE_BYTES."""
    try:
        real = (folder / ".gitignore").resolve(strict=True)
        if not real.is_relative_to(root) or not real.is_file():
            return None
        with real.open("rb") as f:
            data = f.read(MAX_IGNORE_BYTES)
    except (OSError, RuntimeError):
        return None
    return pathspec.GitIgnoreSpec.from_lines(data.decode("utf-8", errors="replace").splitlines())


def rust_files(root: Path) -> Iterator[Path]:
    """Paths relative to root, sorted within each folder, of the workspace's Rust files. Paths are strings on the
    way: pathlib's parsing of every entry cost more than the walk's system calls."""
    root = root.resolve()
    stack: list[tuple[str, str, list[tuple[str, pathspec.PathSpec]]]] = [(str(root), "", [])]
    while stack:
        folder, prefix, specs = stack.pop()         # prefix: the folder relative to the root, "" or ending in "/"
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        if any(entry.name == ".gitignore" for entry in entries):
            spec = _ignore_spec(Path(folder), root)
            if spec is not None:
                specs = [*specs, (prefix, spec)]
        for entry in entries:
            relative = prefix + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if any(s.match_file(relative[len(base):] + ("/" if is_dir else "")) for base, s in specs):
                continue
            if entry.is_symlink():
                try:
                    target = Path(entry.path).resolve(strict=True)
                except (OSError, RuntimeError):
                    continue
                if not target.is_relative_to(root):  # a link out of the workspace is not followed
                    continue
                if target.is_dir():  # links to folders inside the root would visit them twice
                    continue
            if is_dir:
                if entry.name not in SKIP_DIRS:
                    stack.append((entry.path, relative + "/", specs))
            elif entry.name.endswith(".rs") and entry.is_file():
                yield Path(relative)


def module_path(relative: Path) -> str:
    """The module a file defines, from its place under the nearest `src`: src/a/mod.rs -> crate::a."""
    parts = list(relative.with_suffix("").parts)
    if "src" in parts:
        parts = parts[len(parts) - parts[::-1].index("src"):]
    if parts and parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(["crate", *parts])
