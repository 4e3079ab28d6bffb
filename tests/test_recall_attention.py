"""`eval recall-attention` (assistant/lab/eval/recall_attention.py): the probabilities it reports are the ones the lql
layer attends with, and a forced head reads the answer key alone."""
import json

import pytest
import torch

from assistant.lab.eval.recall_attention import _forward, head_attention, parse_heads
from model.config import ModelConfig
from model.io import save_model
from model.model import RustleLM
from tokenizer import DEFAULT_TOKENIZER

from tiny_models import relative_error, tiny


@pytest.mark.parametrize("shift,token_key", [(False, False), (True, False), (True, True)])
def test_the_reported_attention_is_the_one_the_layer_attends_with(shift, token_key):
    torch.manual_seed(3)
    attn = RustleLM(tiny(("swa", "lql"), lql_shift=shift, lql_token_key=token_key)).blocks[1].attn.eval()
    x, embeds = torch.randn(1, 40, 32), torch.randn(1, 40, 32)
    with torch.no_grad():
        p, z = head_attention(attn, x, embeds, list(range(40)))
        assert torch.allclose(p.sum(-1), torch.ones(2, 40)) and float(p.triu(1).abs().max()) == 0.0
        rebuilt = attn.up((p @ z).transpose(0, 1).reshape(40, -1))
        assert relative_error(attn(x, torch.arange(40), None, embeds)[0], rebuilt) < 1e-5


def test_a_forced_head_reads_the_answer_key_alone():
    """One lql block: the residual after its attention is the embedding plus its output, so the forced rows' output
    is up(the answer key's latent, once per head) and the rows before them are untouched."""
    torch.manual_seed(4)
    model = RustleLM(tiny(("lql",), lql_shift=True)).eval()
    attn, ids = model.blocks[0].attn, torch.randint(0, 97, (30,)).tolist()
    residual = {}
    model.blocks[0].mlp_norm.register_forward_pre_hook(lambda _, args: residual.__setitem__("x", args[0][0]))
    answers = {20: 3, 25: 11}
    with torch.no_grad():
        plain = _forward(model, {0: attn}, ids, answers, {})[0]
        forced = _forward(model, {0: attn}, ids, answers, {0: [0, 1]})[0]
        embedded = model.embed(torch.tensor([ids]))
        z = attn.down(model.blocks[0].attn_norm(embedded))[0]
        z = torch.cat([z, torch.cat([torch.zeros_like(z[:1]), z[:-1]])], -1)     # [z_t, z_t-1]
        for row, key in answers.items():
            expected = attn.up(torch.cat([z[key], z[key]]))
            assert relative_error(residual["x"][row] - embedded[0, row], expected) < 1e-5
    assert torch.equal(plain[:20], forced[:20]) and not torch.allclose(plain[20], forced[20])


def test_head_sets_name_lql_layers_and_their_heads():
    layers = dict(enumerate(RustleLM(tiny(("swa", "lql", "gdn", "lql"))).blocks))
    layers = {i: block.attn for i, block in layers.items() if block.kind == "lql"}
    assert parse_heads("1:*,3:1", layers) == {1: [0, 1], 3: [1]}
    for spec, message in [("0:0", "of an lql layer"), ("3:2", "layer 3 has 2 heads"), ("3", "LAYER:HEAD")]:
        with pytest.raises(ValueError, match=message):
            parse_heads(spec, layers)


def test_eval_recall_attention_reports_every_head_and_each_forced_set(rustle, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                         layer_pattern=("swa", "lql"), window=32, lql_dim=16, lql_heads=2)
    save_model(RustleLM(config), tmp_path / "m", DEFAULT_TOKENIZER)
    args = ["eval", "recall-attention", "--files", "data/sample.rs", "--model", str(tmp_path / "m"), "--probes", "4"]
    report = json.loads(rustle(*args, "--force", "1:0", "1:*", "--json").stdout)
    assert report["rows"] > 0 and 0.0 <= report["top1"] <= 1.0 and sorted(report["forced"]) == ["1:*", "1:0"]
    assert {(h["layer"], h["head"]) for h in report["heads"]} == {(1, 0), (1, 1)}
    assert sum(h["rows"] for h in report["heads"] if h["head"] == 0) == report["rows"]
    for h in report["heads"]:
        assert 0.0 <= h["on_answer"] <= 1.0 and abs(h["on_answer"] + h["on_definition"] + h["elsewhere"] - 1) < 1e-6
    bad = rustle(*args, "--force", "0:0", check=False)
    assert bad.returncode == 2 and "lql layer" in bad.stdout
