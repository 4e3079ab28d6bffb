"""The index's lexical scanner (assistant/index/scan.c) against the tree-sitter reading it stands in for (parse.py)."""
import random
from pathlib import Path

import pytest

from assistant.index import indexer, scan
from assistant.index.parse import group_references, parse_source
from kernels import clib

ROOT = Path(__file__).resolve().parent.parent
TRICKY = ROOT / "tests" / "fixtures" / "tricky.rs"      # strings, comments and chars holding braces; every kind
FILES = [TRICKY, *sorted((ROOT / "tests" / "fixtures" / "shop").rglob("*.rs")),
         *sorted((ROOT / "data" / "workspace").rglob("*.rs")), ROOT / "data" / "sample.rs"]

pytestmark = pytest.mark.skipif(not scan.available(), reason="no C compiler: the indexer parses with tree-sitter")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_scan_finds_what_tree_sitter_finds(path):
    source = path.read_bytes()
    scanned, parsed = scan.scan_source(source), parse_source(source)
    assert scanned.definitions == parsed.definitions          # kind, name, scope, trait, span, signature, doc
    assert scanned.imports == parsed.imports


def test_references_mostly_agree_with_tree_sitter():
    scanned = parsed = both = 0
    for path in FILES:
        source = path.read_bytes()
        a, b = parse_source(source).reference_sites(), scan.scan_source(source).reference_sites()
        scanned, parsed, both = scanned + len(b), parsed + len(a), both + len(a & b)
    assert both / parsed > 0.95 and both / scanned > 0.9, (both, parsed, scanned)


@pytest.mark.parametrize("source", [*(path.read_bytes() for path in FILES),
                                    "fn f() { é(); z(); Ünï::new(); a(); é(); ü(1); Z::x(); zz(); }".encode()])
def test_references_are_grouped_as_tree_sitters_are(source):
    """refs.c's groups (one per name and kind, places in order) equal parse.group_references over the same uses."""
    references = scan.scan_source(source).references
    assert references == group_references(site for group in references for site in group.sites())


def test_unicode_whitespace_separates_tokens_as_in_tree_sitter():
    source = "pub struct S {\u2028a: u8,\u00a0b:\u3000u8 }\nfn\u2003f() { g(\u0085); }\n".encode()
    scanned, parsed = scan.scan_source(source), parse_source(source)
    assert scanned.definitions == parsed.definitions and {d.name for d in parsed.definitions} >= {"a", "b", "f"}


def test_delimiters_in_strings_comments_and_chars_move_no_scope():
    symbols = scan.scan_source(TRICKY.read_bytes())
    by_name = {d.name: d for d in symbols.definitions}
    assert not {"fake", "Fake", "not_an_item", "generated", "Opaque"} & set(by_name)   # in text, a macro, extern
    assert by_name["nested_helper"].scope == "" and by_name["area"].scope in ("Shape", "Area")
    assert by_name["Unit"].scope == "" and by_name["Unit"].signature == "struct Unit;"
    assert by_name["Tuple"].signature == "pub struct Tuple<F: Fn() -> u8>"
    assert by_name["lifetimes"].doc == "" and by_name["Bits"].doc == "A union."
    assert {(d.kind, d.name) for d in symbols.definitions if d.scope == "inner"} >= {
        ("trait", "Area"), ("fn", "spawn"), ("fn", "constant"), ("type", "Alias")}
    assert ("variant", "End") in {(d.kind, d.name) for d in symbols.definitions} and "r#match" in by_name
    assert ("write", "call") in {(r.name, r.kind) for r in symbols.references}


def test_broken_and_random_input_is_scanned_as_far_as_it_goes():
    assert "ok" in {d.name for d in scan.scan_source(b"fn ok() {}\nfn broken( {\n struct Later;\n").definitions}
    source = TRICKY.read_bytes()
    rng = random.Random(0)
    for cut in range(0, len(source), 97):                     # every truncation: unclosed strings, comments, items
        for d in scan.scan_source(source[:cut]).definitions:
            assert 0 <= d.start_byte <= d.end_byte <= cut
    for _ in range(50):
        noise = bytes(rng.choice(b"{}()[]<>'\"/*#!r:;,=fn x\n\\") for _ in range(rng.randrange(1, 400)))
        scan.scan_source(noise)


def test_without_a_compiler_the_indexer_parses_with_tree_sitter(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))           # nothing built before
    clib.compiled.cache_clear()
    scan.library.cache_clear()
    try:
        assert not scan.available()
        source = (ROOT / "data" / "workspace" / "src" / "store.rs").read_bytes()
        assert indexer.read_symbols(source) == parse_source(source)
    finally:
        clib.compiled.cache_clear()
        scan.library.cache_clear()
