"""One layout: training packs a repository, and the engine's prompt lays it out, in the same tokens."""
import random

import pytest

from assistant.engine.prompt import PromptConfig, build_prompt
from assistant.engine.shape import shape_at
from assistant.engine.tokens import Vocab
from assistant.lab.train.data import PackConfig, Packer
from tokenizer import load_tokenizer

FILES = [("src/lib.rs", "pub mod store;\n\npub use store::Store;\n"),
         ("src/store.rs",
          "use std::collections::HashMap;\n\npub struct Store {\n    entries: HashMap<String, u64>,\n}\n")]
CURRENT = ("src/main.rs",
           "use kv::Store;\n\nfn main() {\n    let mut store = Store::new();\n    store.insert(\"a\", 1);\n}\n")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_the_repository_part_of_a_prompt_is_the_packed_crate(tok):
    packed = Packer(tok, PackConfig(fim_rate=0.0)).crate("kv", FILES, random.Random(0))
    vocab = Vocab(tok)
    path, text = CURRENT
    offset = text.index("let mut")
    prompt = build_prompt(vocab, PromptConfig(context="repo", healing=False), path, text, offset,
                          shape_at(text, offset), [(p, vocab.encode(t)) for p, t in FILES], "kv")
    assert prompt.ids[:prompt.local_start] == packed[:-1]  # all but <|endoftext|>
    assert packed[-1] == vocab.eos


@pytest.mark.parametrize("layout", ["spm", "psm"])
@pytest.mark.parametrize("cursor", ["let mut", "store.insert", "(\"a\""])
def test_a_prompt_is_the_training_fim_cut_at_the_cursor(tok, cursor, layout):
    vocab = Vocab(tok)
    path, text = CURRENT
    offset = text.index(cursor)
    prompt = build_prompt(vocab, PromptConfig(context="local", layout=layout, healing=False), path, text, offset,
                          shape_at(text, offset), [], "kv")
    trained = Packer(tok, PackConfig()).fim(path, text, offset, offset, spm=layout == "spm")  # an empty middle
    assert prompt.ids == trained
