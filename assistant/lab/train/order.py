"""Repository order for packing: a crate's files with definitions before their uses (issue 20's ordering
lever), so that when the model meets a name, the file that defines it is already in its context.

A file depends on another when it calls a function or names a type that the other defines (tree-sitter,
the index's parser). Files are emitted in Kahn's order, ties and cycles resolved by the original (path)
order: among the files not yet emitted, the first whose dependencies are all emitted, else the one with
the fewest dependencies still pending.
"""
from __future__ import annotations

from ...index.parse import parse_source, parser

LINKING_KINDS = {"fn", "struct", "enum", "union", "trait", "const", "static", "type", "macro"}


def dependencies(files: list[tuple[str, str]]) -> list[set[int]]:
    """For each file, the other files that define a name it references."""
    ts = parser()
    parsed = [parse_source(text.encode(), ts) for _, text in files]
    defined_in: dict[str, set[int]] = {}
    for i, symbols in enumerate(parsed):
        for d in symbols.definitions:
            if d.kind in LINKING_KINDS:
                defined_in.setdefault(d.name, set()).add(i)
    return [{j for r in symbols.references for j in defined_in.get(r.name, ()) if j != i}
            for i, symbols in enumerate(parsed)]


def definitions_first(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    deps = dependencies(files)
    emitted: list[int] = []
    done: set[int] = set()
    while len(emitted) < len(files):
        pending = [i for i in range(len(files)) if i not in done]
        nxt = min(pending, key=lambda i: (len(deps[i] - done), i))  # ready first, then fewest missing
        emitted.append(nxt)
        done.add(nxt)
    return [files[i] for i in emitted]
