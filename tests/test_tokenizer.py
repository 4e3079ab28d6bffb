"""The shipped tokenizer: lossless, Rust-aware pieces, special tokens, loadable by tokenizers and transformers."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import DEFAULT_TOKENIZER, SPECIAL_TOKENS, load_hf_tokenizer, load_tokenizer
from tokenizer.pretokenize import pre_tokenizer
from tokenizer.train import TokenizerRecipe, save, train

RUST = '''#![allow(dead_code)]
pub fn parse<'a>(input: &'a str) -> Result<Vec<u8>, Error> {
    let n = 1_000u64 + 0xFFu8 as u64;
    match input.len() { 0..=9 => println!("{n:?}\\n"), _ => {} }
        std::mem::take(&mut x)?;
}
'''


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_decode_of_encode_is_the_input_for_any_unicode(text):
    tok = load_tokenizer()
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


def test_special_tokens_come_first_in_their_conventional_order(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    ids = tok.encode("<|fim_prefix|>fn f() {<|fim_suffix|>}<|fim_middle|>").ids
    assert ids[0] == 1 and 3 in ids and ids[-1] == 2


def test_rust_lexemes_are_single_pre_tokens():
    pieces = [p for p, _ in pre_tokenizer("rust").pre_tokenize_str(RUST)]
    pieces = [p.replace("Ġ", " ").replace("Ċ", "\n") for p in pieces]
    for lexeme in ["#![", "'a", "::", " ->", " =>", "..=", " println!", " 1_000u64", " 0xFFu8", "\n    "]:
        assert lexeme in pieces, lexeme
    assert "input_len" not in pieces and ".len" in pieces


def test_indentation_after_a_newline_is_one_token(tok):
    for width in (4, 8, 12, 16):
        ids = tok.encode("{\n" + " " * width + "let x = 1;", add_special_tokens=False).ids
        assert tok.decode(ids[1:2]) == "\n" + " " * width
        assert tok.decode(ids[2:3]) == "let"  # the first word carries no piece of the indentation


def test_transformers_loads_it_and_agrees(tok):
    hf = load_hf_tokenizer()
    from transformers import PreTrainedTokenizerFast

    assert isinstance(hf, PreTrainedTokenizerFast)
    ids = hf(RUST, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode(RUST, add_special_tokens=False).ids
    assert hf.decode(ids) == RUST
    assert hf.eos_token == "<|endoftext|>" and hf.pad_token == "<|pad|>"


def test_the_shipped_recipe_is_recorded():
    recipe = json.loads((DEFAULT_TOKENIZER / "recipe.json").read_text())
    assert recipe["vocab_size"] == load_tokenizer().get_vocab_size()
    assert recipe["pre_tokenizer"] == "rust" and recipe["split"] == "train" and recipe["split_seed"] is not None


def test_training_then_saving_gives_a_loadable_lossless_tokenizer(tmp_path):
    texts = [RUST, "fn main() {\n    println!(\"héllo 🌍\");\n}\n"] * 20
    recipe = TokenizerRecipe(vocab_size=300)
    save(train(texts, recipe), tmp_path, recipe)
    tok = load_tokenizer(tmp_path)
    assert tok.get_vocab_size() == 300
    assert tok.decode(tok.encode(texts[1]).ids) == texts[1]
    assert load_hf_tokenizer(tmp_path).decode(tok.encode(RUST).ids) == RUST


def test_loading_a_missing_tokenizer_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_stats_and_show_commands(rustle, tmp_path):
    bad = tmp_path / "latin1.rs"
    bad.write_bytes(b"// caf\xe9\n")
    out = rustle("tokenizer", "stats", "data/sample.rs", str(bad)).stdout
    out += rustle("tokenizer", "show", "data/sample.rs").stdout
    assert "sample.rs" in out and "chars/token" in out
