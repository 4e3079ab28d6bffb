"""What one Rust file contributes to the index, read with tree-sitter: definitions, imports, references.

One query (run in C by tree-sitter) finds every node of interest, so Python touches only the matches,
not the whole tree. Parsing tolerates broken code: tree-sitter recovers and we index what it finds.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from itertools import groupby
from typing import NamedTuple

import tree_sitter
import tree_sitter_rust

DEFINITION_NODES = {
    "function_item": "fn", "function_signature_item": "fn", "struct_item": "struct", "enum_item": "enum",
    "union_item": "union", "trait_item": "trait", "impl_item": "impl", "const_item": "const",
    "static_item": "static", "type_item": "type", "macro_definition": "macro", "mod_item": "mod",
    "enum_variant": "variant", "field_declaration": "field",
}
SCOPE_NODES = ("impl_item", "trait_item", "mod_item")
SIGNATURE_CHARS = 240

QUERY = """
[(function_item) (function_signature_item) (struct_item) (enum_item) (union_item) (trait_item) (impl_item)
 (const_item) (static_item) (type_item) (macro_definition) (mod_item) (enum_variant) (field_declaration)] @def
(use_declaration argument: (_) @use)
(call_expression function: [(identifier) @call
                            (field_expression field: (field_identifier) @call)
                            (scoped_identifier name: (identifier) @call)])
(macro_invocation macro: (identifier) @call)
; a call among a macro's arguments (`format!("{}", name(x))`): an identifier right before a (…) token tree
(token_tree (identifier) @call . (token_tree))
(type_identifier) @type
"""


class Definition(NamedTuple):   # NamedTuples: built several times faster than frozen dataclasses
    kind: str
    name: str
    scope: str          # the enclosing impl type, trait or module ("" at file level), e.g. "Parser" or "tests"
    trait: str          # for impl blocks: the trait implemented ("" for inherent impls)
    start: tuple[int, int]   # 0-based (line, column in bytes)
    end: tuple[int, int]
    start_byte: int
    end_byte: int
    signature: str
    doc: str


class References(NamedTuple):
    """Where a file uses one name, one way: the index's row for it (refs.c writes the same for the scan)."""
    name: str
    kind: str           # "call" | "type"
    places: str         # "line:column line:column ...", 0-based, in source order

    def sites(self) -> list[tuple[str, str, int, int]]:
        return [(self.name, self.kind, *map(int, place.split(":"))) for place in self.places.split()]


def group_references(sites: Iterable[tuple[str, str, int, int]]) -> list[References]:
    """(name, kind, line, column) of every use, grouped by name and kind, sorted by them."""
    return [References(name, kind, " ".join(f"{line}:{column}" for _, _, line, column in group))
            for (name, kind), group in groupby(sorted(sites), key=lambda site: site[:2])]


@dataclass(frozen=True)
class FileSymbols:
    definitions: list[Definition]
    imports: list[tuple[str, int]]      # (use path as written, line)
    references: list[References]        # by name and kind

    def reference_sites(self) -> set[tuple[str, str, int, int]]:
        """Every use: (name, kind, line, column)."""
        return {site for group in self.references for site in group.sites()}

    def reference_count(self) -> int:
        return sum(group.places.count(" ") + 1 for group in self.references)


@cache
def language() -> tree_sitter.Language:
    return tree_sitter.Language(tree_sitter_rust.language())


@cache
def _query() -> tree_sitter.Query:
    return tree_sitter.Query(language(), QUERY)


def parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(language())


def _text(node: tree_sitter.Node | None, source: bytes) -> str:
    # a slice of the source we hold: `node.text` copies it out of the tree at several times the cost
    return "" if node is None else source[node.start_byte:node.end_byte].decode("utf-8", "replace")


def _name(node: tree_sitter.Node, source: bytes) -> str:
    if node.type == "impl_item":
        return _text(node.child_by_field_name("type"), source)
    return _text(node.child_by_field_name("name"), source)


def _signature(node: tree_sitter.Node, source: bytes) -> str:
    """The definition up to its body, whitespace collapsed: `pub fn parse(&mut self) -> Result<Ast>`."""
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None and node.type not in ("enum_variant",) else node.end_byte
    text = " ".join(source[node.start_byte:end].decode("utf-8", "replace").split())
    return text[:SIGNATURE_CHARS]


def doc_line(comment: str) -> str | None:
    """An outer doc comment's text (`/// text`, `/** text */`); None for any other comment."""
    if comment.startswith("///") and not comment.startswith("////"):
        return comment[3:].strip()
    if comment.startswith("/**"):
        return comment[3:-2].strip()
    return None


def _doc(node: tree_sitter.Node, source: bytes) -> str:
    """Outer doc comments (`///`, `/** */`) right above the node, attributes in between skipped."""
    lines = []
    sibling = node.prev_sibling
    while sibling is not None and sibling.type in ("line_comment", "block_comment", "attribute_item"):
        line = doc_line(_text(sibling, source))
        if line is not None:
            lines.append(line)
        elif sibling.type != "attribute_item":
            break
        sibling = sibling.prev_sibling
    return "\n".join(reversed(lines))


def _scope(node: tree_sitter.Node, source: bytes) -> str:
    parent = node.parent
    while parent is not None:
        if parent.type in SCOPE_NODES:
            return _name(parent, source)
        parent = parent.parent
    return ""


def parse_source(source: bytes, ts_parser: tree_sitter.Parser | None = None) -> FileSymbols:
    tree = (ts_parser or parser()).parse(source)
    captures = tree_sitter.QueryCursor(_query()).captures(tree.root_node)
    definitions, names_at = [], set()
    for node in captures.get("def", []):
        name = _name(node, source)
        if not name:
            continue
        trait = _text(node.child_by_field_name("trait"), source) if node.type == "impl_item" else ""
        definitions.append(Definition(DEFINITION_NODES[node.type], name, _scope(node, source), trait,
                                      tuple(node.start_point), tuple(node.end_point),  # plain tuples pickle
                                      node.start_byte, node.end_byte, _signature(node, source), _doc(node, source)))
        name_node = node.child_by_field_name("name")
        if name_node is not None:
            names_at.add(name_node.start_byte)
    definitions.sort(key=lambda d: d.start_byte)
    imports = [(_text(node, source), node.start_point[0]) for node in captures.get("use", [])]
    references = group_references((_text(node, source), kind, *node.start_point) for kind in ("call", "type")
                                  for node in captures.get(kind, []) if node.start_byte not in names_at)
    return FileSymbols(definitions, sorted(imports, key=lambda i: i[1]), references)
