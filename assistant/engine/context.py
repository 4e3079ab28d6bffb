"""Where a prompt's context comes from, besides the buffer itself.

- `snippets`: definitions ranked from the index: identifiers near the cursor (closest first), the
  receiver's methods for `x.`, imported names, then top-level items of files in the same folder and of
  recently edited files; rendered as short pseudo-files in the training layout.
- `repository_files`: every other workspace file in one fixed order (oldest mtime first, so recently edited
  files come last and an edit invalidates as little of the prefilled state as possible), under a token
  budget; past it, the files the index says are most related to the current one are kept. The document's
  own file is never among them: its saved copy would show the model the text at the cursor as last saved
  (auto-save leaves the line cut there: the model copies the line's end and suggests nothing), and the
  buffer that follows is the document anyway, as training shows each file once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath

from ..index.store import Connection, Symbol, file_paths, file_symbols, find, members, related_files

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RECEIVER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\.\s*[A-Za-z0-9_]*$")
KEYWORDS = set("""as async await break const continue crate dyn else enum extern false fn for if impl in let loop match
mod move mut pub ref return self Self static struct super trait true type unsafe use where while Some None Ok Err
String Vec Option Result Box usize u8 u16 u32 u64 i32 i64 f32 f64 bool str char""".split())
TAIL_CHARS = 2000   # receiver_type: the part of a prefix searched afresh on every request
SNIPPET_KINDS = ("fn", "struct", "enum", "trait", "type", "const", "static", "macro", "union")


@dataclass(frozen=True)
class Snippet:
    path: str
    text: str


def _render(symbol: Symbol) -> str:
    doc = "".join(f"/// {line}\n" for line in symbol.doc.splitlines()[:3])
    body = " { ... }" if symbol.kind in ("fn", "impl", "trait", "mod") else ""
    sig = symbol.signature if symbol.signature.endswith((";", "}", ",")) or body else symbol.signature + " { ... }"
    return doc + sig + body + "\n"


def receiver_type(prefix: str, name: str) -> str | None:
    """The type of `name` as the prefix declares it (`name: Type`, `let name = Type::…`), `Self`'s for self; one
    declared in the prefix's tail (its last ~`TAIL_CHARS`, whole lines) wins over one further up. The head is the
    same on every keystroke of a line, so its answer is remembered (a pass over a 100 KB prefix costs ~1.5 ms); a
    declaration split across the cut between head and tail is missed."""
    cut = prefix.rfind("\n", 0, max(0, len(prefix) - TAIL_CHARS)) + 1
    return _declared_type(prefix[cut:], name) or _head_type(prefix[:cut], name)


def _declared_type(text: str, name: str) -> str | None:
    if name == "self":
        impls = re.findall(r"impl(?:<[^>]*>)?\s+(?:[\w:]+(?:<[^>]*>)?\s+for\s+)?([A-Z]\w*)", text)
        return impls[-1] if impls else None
    typed = re.findall(rf"\b{name}\s*:\s*&?(?:mut\s+)?([A-Z]\w*)", text)
    if typed:
        return typed[-1]
    built = re.findall(rf"let\s+(?:mut\s+)?{name}\s*=\s*([A-Z]\w*)\s*(?:::|\{{)", text)
    return built[-1] if built else None


_head_type = lru_cache(maxsize=16)(_declared_type)   # a few documents' heads, a few names each


def snippets(db: Connection, path: str, prefix: str, recent: list[str], limit: int = 24) -> list[Snippet]:
    """Ranked context for a cursor at the end of `prefix` in file `path` (workspace-relative)."""
    chosen: list[Symbol] = []
    seen: set[tuple[str, int]] = set()

    def add(symbols: list[Symbol]) -> None:
        for s in symbols:
            if (s.path, s.start_line) not in seen and s.kind in SNIPPET_KINDS and len(chosen) < limit:
                seen.add((s.path, s.start_line))
                chosen.append(s)

    lines = prefix.split("\n")
    receiver = RECEIVER.search(lines[-1])
    if receiver:
        type_name = receiver_type(prefix, receiver.group(1))
        if type_name:
            add(members(db, type_name))
    names: list[str] = []
    for line in reversed(lines[-40:]):  # closest to the cursor first
        for name in reversed(IDENTIFIER.findall(line)):
            if name not in KEYWORDS and name not in names:
                names.append(name)
    imported = [m.split("::")[-1].strip("{} ") for line in lines if line.startswith("use ")
                for m in re.split(r"[,{]", line[4:].rstrip(";"))]
    for name in names + [n for n in imported if n and n not in names]:
        add([s for s in find(db, name, limit=3) if s.path != path])
    folder = str(PurePosixPath(path).parent)
    same_folder = [p for p in file_paths(db) if p != path and str(PurePosixPath(p).parent) == folder]
    for other in same_folder + [p for p in recent if p != path]:
        add([s for s in file_symbols(db, other) if not s.scope])
    by_file: dict[str, list[str]] = {}
    for s in chosen:
        by_file.setdefault(s.path, []).append(_render(s))
    return [Snippet(p, "".join(texts)) for p, texts in by_file.items()]


def repository_files(files: dict[str, tuple[int, list[int]]], current: str, budget_tokens: int,
                     db: Connection | None) -> list[str]:
    """The workspace files other than `current` that make up the repository part, in prefill order. `files`: each
    file's last save (st_mtime_ns) and tokens, as `Workspace.file` reads them."""
    # oldest first: saves re-run only the end of the part, and a file switch the files from the earlier of
    # the two documents on (the state tree keeps both branches)
    ordered = sorted((p for p in files if p != current), key=lambda p: (files[p][0], p))
    count = lambda p: len(files[p][1]) + 8  # noqa: E731  (+ the file header)
    if sum(count(p) for p in ordered) <= budget_tokens:
        return ordered
    ranked = [p for p, _ in related_files(db, current) if p in files and p != current] if db is not None else []
    ranked += [p for p in reversed(ordered) if p not in ranked]   # then the most recently edited
    kept, used = set(), 0
    for p in ranked:
        n = count(p)
        if used + n <= budget_tokens:
            kept.add(p)
            used += n
    return [p for p in ordered if p in kept]
