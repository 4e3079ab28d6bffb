"""Packing levers of issue 20. Identifier-anonymised crates: a crate's own names renamed consistently; std, keywords,
modules and trait methods untouched; the renamed crate still compiles with a real rustc. Definitions-first order.
Line-completion FIM cuts (issue 19): the middle is the rest of one line, as a completion request's is."""
import random
import shutil
import subprocess

import pytest

from assistant.lab.train.anonymize import anonymize, common_names, own_names
from assistant.lab.train.data import PackConfig, Packer, line_span
from tokenizer import load_tokenizer

LIB = """mod shapes;
use std::collections::HashMap;
use std::fmt;

pub use shapes::{Circle, area_of};

pub const MAX_SHAPES: usize = 8;

pub struct Registry { shapes: HashMap<String, Circle> }

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result { write!(f, "{} shapes", self.shapes.len()) }
}

impl Registry {
    pub fn total_area(&self) -> f64 { self.shapes.values().map(area_of).sum() }
}
"""
SHAPES = """/// A circle; `area_of` measures it.
pub struct Circle { pub radius: f64 }

pub fn area_of(c: &Circle) -> f64 { 3.14 * c.radius * c.radius }
"""
FILES = [("src/lib.rs", LIB), ("src/shapes.rs", SHAPES)]


def test_own_names_skip_std_keywords_modules_and_trait_methods():
    own = own_names(FILES, common={"new"})  # `shapes` is a field, but a module too: renaming it breaks `mod shapes`
    assert own == {"MAX_SHAPES", "Registry", "total_area", "Circle", "radius", "area_of"}


def test_common_names_are_the_ones_many_crates_use():
    crates = [[("a.rs", "fn alpha() { let v: Vec<u8> = Vec::new(); }")],
              [("b.rs", "fn beta() -> Vec<u8> { Vec::new() }")], [("c.rs", "struct Gamma;")]]
    assert common_names(crates, share=0.5) == {"fn", "Vec", "u8", "new"}


def test_renaming_is_consistent_across_files():
    out = dict(anonymize(FILES, common=set(), rng=random.Random(0)))
    lib, shapes = out["src/lib.rs"], out["src/shapes.rs"]
    for kept in ("HashMap", "fmt::Display", "fn fmt", "mod shapes;", "use std::collections", "String", "f64"):
        assert kept in lib
    for gone in ("Registry", "total_area", "Circle", "area_of", "MAX_SHAPES", "radius"):
        assert gone not in lib and gone not in shapes
    new_circle = shapes.split("pub struct ")[1].split(" ")[0]
    assert new_circle[0].isupper() and f"HashMap<String, {new_circle}>" in lib and new_circle in lib.split("\n")[4]
    new_max = lib.split("pub const ")[1].split(":")[0]
    assert new_max.isupper()


@pytest.mark.skipif(shutil.which("rustc") is None, reason="rustc is not installed")
def test_an_anonymised_crate_still_compiles(tmp_path):
    for name, files in (("before", FILES), ("after", anonymize(FILES, common=set(), rng=random.Random(1)))):
        for path, text in files:
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_text(text)
        done = subprocess.run(["rustc", "--edition", "2021", "--crate-type", "lib", "--out-dir", str(tmp_path / name),
                               str(tmp_path / name / "src" / "lib.rs")], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


def test_definitions_come_before_their_uses():
    from assistant.lab.train.order import definitions_first

    files = [("src/a_main.rs", "fn main() { let r = Registry::default(); report(&r); }\n"),
             ("src/b_report.rs", "pub fn report(r: &Registry) { println!(\"{}\", r.len()); }\n"),
             ("src/c_registry.rs", "#[derive(Default)]\npub struct Registry { n: usize }\n"),
             ("src/d_cycle.rs", "pub fn ping() { pong() }\n"), ("src/e_cycle.rs", "pub fn pong() { ping() }\n")]
    order = [p for p, _ in definitions_first(files)]
    assert sorted(order) == sorted(p for p, _ in files)       # every file, once, even with a cycle
    assert order.index("src/c_registry.rs") < order.index("src/b_report.rs") < order.index("src/a_main.rs")


def test_a_line_cut_middle_is_the_rest_of_one_non_blank_line():
    rng = random.Random(0)
    cuts = [line_span(LIB, rng) for _ in range(300)]
    whole = 0
    for a, b in cuts:
        start = LIB.rfind("\n", 0, b) + 1
        line = LIB[start:b]
        indent = start + len(line) - len(line.lstrip())
        assert line.strip() and LIB[b:b + 1] in ("\n", "") and indent <= a < b
        whole += a == indent
    assert 60 < whole < 160          # a third start at the indentation: whole lines
    assert line_span("\n  \n", rng) is None


def test_packing_with_line_cuts_puts_one_line_in_each_middle():
    tok = load_tokenizer()
    packer = Packer(tok, PackConfig(fim_rate=1.0, spm_rate=0.0, fim_line_rate=1.0))
    for seed in range(20):
        text = tok.decode(packer.file("src/lib.rs", LIB, random.Random(seed)), skip_special_tokens=False)
        prefix, rest = text.split("<|fim_prefix|>")[1].split("<|fim_suffix|>")
        suffix, middle = rest.split("<|fim_middle|>")
        assert prefix + middle + suffix == LIB and middle.strip() and "\n" not in middle
        assert suffix.startswith("\n")


def test_a_windowed_cut_is_the_files_rest_then_spm_of_a_few_lines_as_the_engine_prompts():
    tok = load_tokenizer()
    text = "".join(f"fn f{i}() -> u32 {{ {i} }}\n" for i in range(60))
    packer = Packer(tok, PackConfig(fim_rate=1.0, fim_line_rate=1.0, fim_window_rate=1.0, window_lines=5))
    for seed in range(20):
        packed = tok.decode(packer.file("src/lib.rs", text, random.Random(seed)), skip_special_tokens=False)
        _, outside, cut = packed.split("<|file_sep|>src/lib.rs\n")
        suffix, rest = cut.removeprefix("<|fim_prefix|><|fim_suffix|>").split("<|fim_middle|>")
        window = rest + suffix                                 # prefix + middle, then the suffix
        start = text.index(window)
        assert outside == text[:start] + text[start + len(window):] and window.count("\n") <= 2 * 5 + 2
        assert suffix.startswith("\n") or start + len(window) == len(text)
    with pytest.raises(ValueError, match="fim_window_rate"):
        PackConfig(fim_window_rate=2.0)
    with pytest.raises(ValueError, match="window_lines"):
        PackConfig(window_lines=0)


def test_line_cut_share_must_be_a_share():
    with pytest.raises(ValueError, match="fim_line_rate"):
        PackConfig(fim_line_rate=1.5)
