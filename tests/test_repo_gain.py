"""`eval repo-gain`: a late file of a packed crate scored after its repository and alone, on a tiny model."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

from assistant.lab.eval.repo_gain import repo_gain, token_losses
from assistant.lab.train.data import PackConfig, Packer
from conftest import SOURCE
from model.config import ModelConfig
from model.model import RustleLM
from tokenizer import load_tokenizer

FILES = [("src/a.rs", SOURCE.format(i=1)), ("src/b.rs", SOURCE.format(i=2)), ("src/c.rs", SOURCE.format(i=3))]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                         layer_pattern=("swa", "lql"), window=16, lql_dim=16, lql_heads=1)
    return RustleLM(config).eval()


def test_token_losses_are_the_models_cross_entropy(model):
    ids = list(range(100, 160))
    expected = F.cross_entropy(model(torch.tensor([ids[:-1]]))[0], torch.tensor(ids[1:]), reduction="none")
    assert torch.allclose(token_losses(model, ids, bf16=False), expected, atol=1e-4)


def test_late_files_are_scored_after_the_crate_and_alone(model):
    tok = load_tokenizer()
    layout = Packer(tok, PackConfig(fim_rate=0.0)).layout
    packed = Packer(tok, PackConfig(fim_rate=0.0)).crate("demo", FILES, random.Random(0))[:-1]
    late = len(layout.repo_header("demo")) + sum(len(layout.file_header(p) + layout.encode(t)) for p, t in FILES[:2])
    report = repo_gain(model, tok, [("demo", FILES)], ctx=len(packed) + 8, min_start=late, bf16=False)
    assert (report.crates, report.files) == (1, 1)         # only src/c.rs starts that far in
    body = late + len(layout.file_header("src/c.rs"))
    text = FILES[2][1]
    assert report.tokens == len(packed) - body and report.bytes == len(text.encode())
    after = float(token_losses(model, packed, bf16=False)[body - 1:].sum())
    header = layout.repo_header("demo") + layout.file_header("src/c.rs")
    alone = float(token_losses(model, header + layout.encode(text), bf16=False)[len(header) - 1:].sum())
    assert report.repo_bits_per_byte == pytest.approx(after / math.log(2) / len(text.encode()), rel=1e-4)
    assert report.alone_bits_per_byte == pytest.approx(alone / math.log(2) / len(text.encode()), rel=1e-4)
    assert report.gain == pytest.approx(1 - after / alone, rel=1e-4)
    assert list(report.loss_by_position)[0] == "0-64"


def test_no_late_file_is_a_clear_error(model):
    with pytest.raises(ValueError, match="no file starts"):
        repo_gain(model, load_tokenizer(), [("demo", FILES[:1])], ctx=4096, min_start=4096, bf16=False)
