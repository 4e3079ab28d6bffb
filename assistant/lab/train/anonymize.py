"""Identifier-anonymised crates: a crate's own names renamed, consistently across its files, to fresh random
names, so that the model can only predict them by copying from the crate's other files (issue 20).

"Own" names are the ones the crate defines (tree-sitter, the index's parser): functions, types, fields,
variants, constants, statics, macros; never module names (they are file paths too), methods of trait
impls (the trait decides their names), keywords, or names common across the corpus (std and extern
crates' names: those used by many crates). Renaming is by whole identifier, in code, strings and comments.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import PurePosixPath

from ...index.parse import parse_source, parser

IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
RENAMED_KINDS = {"fn", "struct", "enum", "union", "trait", "const", "static", "type", "macro", "variant", "field"}
KEYWORDS = set("""as async await break const continue crate dyn else enum extern false fn for if impl in let loop
match mod move mut pub ref return self Self static struct super trait true type unsafe use where while union
macro_rules main""".split())
SYLLABLES = ["ka", "lo", "mi", "ren", "su", "tav", "ve", "zor", "qui", "dan", "pel", "rok", "fi", "gus", "hob",
             "jex", "nu", "wib", "yar", "cor", "bel", "tesh", "ox", "lum"]


def names_in(text: str) -> set[str]:
    return set(IDENTIFIER.findall(text))


def common_names(crates: Iterable[list[tuple[str, str]]], share: float) -> set[str]:
    """Identifiers that occur in at least `share` of the crates: std's, popular crates', the language's."""
    counts: Counter[str] = Counter()
    n = 0
    for files in crates:
        n += 1
        seen: set[str] = set()
        for _, text in files:
            seen |= names_in(text)
        counts.update(seen)
    return {name for name, c in counts.items() if c >= share * n}


def own_names(files: list[tuple[str, str]], common: set[str]) -> set[str]:
    """The names a crate defines that anonymisation may rename."""
    ts = parser()
    names: set[str] = set()
    modules = {PurePosixPath(path).stem for path, _ in files} | {PurePosixPath(path).parent.name for path, _ in files}
    for _, text in files:
        defs = parse_source(text.encode(), ts).definitions
        modules |= {d.name for d in defs if d.kind == "mod"}
        trait_impls = [(d.start_byte, d.end_byte) for d in defs if d.kind == "impl" and d.trait]
        for d in defs:
            inside_trait_impl = any(a < d.start_byte and d.end_byte <= b for a, b in trait_impls)
            if d.kind in RENAMED_KINDS and not inside_trait_impl and len(d.name) >= 3:
                names.add(d.name)
    return names - common - KEYWORDS - modules  # a field named like a module would rename the module too


def fresh_name(style_of: str, rng: random.Random) -> str:
    """A random name in the style of `style_of`: CamelCase, UPPER_SNAKE or snake_case."""
    parts = [rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))]
    if style_of[:1].isupper() and not style_of.isupper():
        return "".join(p.capitalize() for p in parts)
    joined = "_".join(parts)
    return joined.upper() if style_of.isupper() else joined


def anonymize(files: list[tuple[str, str]], common: set[str], rng: random.Random) -> list[tuple[str, str]]:
    """The crate's files with its own names renamed consistently (a name keeps one new name in every file)."""
    own = own_names(files, common)
    taken = set().union(*(names_in(text) for _, text in files)) if files else set()
    mapping: dict[str, str] = {}
    for name in sorted(own):
        new = fresh_name(name, rng)
        while new in taken:
            new += rng.choice(SYLLABLES)
        taken.add(new)
        mapping[name] = new
    rename = lambda m: mapping.get(m.group(0), m.group(0))  # noqa: E731
    return [(path, IDENTIFIER.sub(rename, text)) for path, text in files]
