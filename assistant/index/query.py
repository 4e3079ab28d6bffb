"""Questions over the index that have exact answers: where a name is defined, where it is used, what
implements a trait, what a file holds, the module tree. `rustle query` and `rustle chat` both ask them here
and get `Hit`s back: a location (1-based line), a kind, a name and the signature or line of code there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import store

COMMANDS = {                       # word -> (argument, what it answers)
    "find": ("NAME", "definitions whose name holds these letters in order (fuzzy)"),
    "def": ("NAME", "where NAME is defined (exact; else the closest names)"),
    "refs": ("NAME", "where NAME is called or named as a type"),
    "impls": ("TRAIT", "the impl blocks of TRAIT, and the types they are for"),
    "outline": ("PATH", "the definitions of a file, in order"),
    "file": ("PATH", "a file's lines"),
    "tree": ("", "the module tree: every module and its file"),
}


IDENTIFIER_RE = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")


class QueryError(ValueError):
    """A query that cannot be asked: an unknown word, a missing argument, a path outside the index."""


@dataclass(frozen=True)
class Hit:
    path: str
    line: int          # 1-based
    kind: str          # a definition's kind, "call" | "type" for references, "line" for a file's lines, "mod"
    name: str
    signature: str     # the definition's head, or the line of code at a reference

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


def ask(db: store.Connection, root: Path, query: str, limit: int = 50) -> list[Hit]:
    """Answer `query` ("def Parser", "/refs parse", "tree", …) from the index of the workspace at `root`."""
    word, _, argument = query.strip().partition(" ")
    word, argument = word.lstrip("/"), argument.strip()
    if word not in COMMANDS:
        raise QueryError(f"unknown query '{word}': use one of {', '.join(COMMANDS)}")
    if COMMANDS[word][0] and not argument:
        raise QueryError(f"'{word}' needs a {COMMANDS[word][0]}")
    if word == "find":
        return [definition_hit(s) for s in store.fuzzy(db, argument, limit)]
    if word == "def":
        return [definition_hit(s) for s in (store.find(db, argument, limit=limit) or store.fuzzy(db, argument, limit))]
    if word == "refs":
        lines = _Lines(root)
        return [Hit(path, line + 1, kind, argument, lines.at(path, line))
                for path, line, _, kind in store.references(db, argument, limit)]
    if word == "impls":
        return [definition_hit(s) for s in store.impl_blocks(db, argument, limit) if trait_name(s.trait) == argument]
    if word == "tree":
        return [Hit(path, 1, "mod", module, "") for module, path in store.modules(db)]
    path = indexed_path(db, root, argument)
    if word == "outline":
        return [definition_hit(s) for s in store.file_symbols(db, path)]
    text = (root / path).read_text(encoding="utf-8", errors="replace")
    return [Hit(path, i, "line", "", line) for i, line in enumerate(text.splitlines(), start=1)]


def trait_name(written: str) -> str:
    """A trait as written in an impl (`fmt::Display`, `Iterator<Item = u8>`, `?Sized`) → its bare name."""
    return re.split(r"::", re.sub(r"<.*", "", written).strip().lstrip("?"))[-1].strip()


def indexed_path(db: store.Connection, root: Path, argument: str) -> str:
    """`argument` (relative to the root, or absolute inside it) as the index names it; a QueryError otherwise."""
    candidate = Path(argument)
    try:
        relative = (candidate if candidate.is_absolute() else root / candidate).resolve().relative_to(root.resolve())
    except ValueError:
        raise QueryError(f"{argument} is outside the workspace {root}") from None
    path = relative.as_posix()
    if path not in store.file_paths(db):
        matches = [p for p in store.file_paths(db) if p.endswith("/" + path) or p == path]
        if len(matches) != 1:
            raise QueryError(f"{argument} is not an indexed file of {root}")
        path = matches[0]
    return path


def definition_hit(s: store.Symbol) -> Hit:
    """A definition as a Hit: 1-based line, its name with its scope (impl blocks keep the type's name)."""
    name = f"{s.scope}::{s.name}" if s.scope and s.kind != "impl" else s.name
    return Hit(s.path, s.start_line + 1, s.kind, name, s.signature)


class _Lines:
    """The lines of the workspace's files, read once each (references show the code they sit in)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, list[str]] = {}

    def at(self, path: str, line: int) -> str:
        if path not in self.files:
            try:
                self.files[path] = (self.root / path).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                self.files[path] = []
        lines = self.files[path]
        return lines[line].strip() if line < len(lines) else ""
