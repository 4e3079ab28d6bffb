"""Training's compiled paths on a CPU: the gated delta rule's chunk form on the inputs a trained model gives it,
and lql's block selection past its recent keys (training windows longer than 4K)."""
from pathlib import Path

import pytest
import torch

import kernels.gdn.chunk as chunk
import model.layers.gdn as gdn_layer
from model import DEFAULT_MODEL
from model.config import ModelConfig
from model.io import load_model
from model.model import RustleLM
from tokenizer import tokenizer_of
from tokenizer.layout import Layout

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 4096   # the shipped recipe's training window: 64 chunks


def first_gdn_inputs(monkeypatch: pytest.MonkeyPatch) -> tuple:
    """What the shipped model's first gdn layer passes the chunk form on a 4K window of the repository's Rust."""
    model, layout = load_model(DEFAULT_MODEL).float(), Layout(tokenizer_of(DEFAULT_MODEL))
    text = "".join(p.read_text() for p in sorted((ROOT / "data" / "workspace" / "src").glob("*.rs")))
    ids = layout.repo_header("workspace") + layout.file_header("src/lib.rs")
    while len(ids) < WINDOW:
        ids += layout.encode(text)
    seen = []

    def record(*args):
        seen.append(args)
        return chunk.chunk_gated_delta_rule(*args)

    with monkeypatch.context() as patch, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        patch.setattr(gdn_layer, "chunk_gated_delta_rule", record)
        model.blocks[0](model.embed(torch.tensor([ids[:WINDOW]])), torch.arange(WINDOW), None)
    return seen[0]


@pytest.mark.slow
def test_compiled_chunks_keep_bf16_gradients_finite_and_equal_to_eager(monkeypatch):
    """Compiled with its chunk loop unrolled, the bf16 backward gave NaN gradients for k, v, g and beta on an Intel
    Xeon (family 6 model 207) while eager was finite: on a CPU the loop now stays outside the graph."""
    args = first_gdn_inputs(monkeypatch)
    grads = {}
    for name, fn in (("eager", chunk.torch_chunk_gated_delta_rule),
                     ("compiled", torch.compile(chunk.torch_chunk_gated_delta_rule))):
        leaves = [a.detach().clone().requires_grad_(True) for a in args[:5]]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, state = fn(*leaves, *args[5:])
        (out.square().mean() + state.square().mean()).backward()
        grads[name] = [x.grad for x in leaves]
    for label, eager, compiled in zip("q k v g beta".split(), grads["eager"], grads["compiled"]):
        assert torch.isfinite(compiled).all(), label
        assert float((compiled - eager).abs().max()) <= 0.05 * float(eager.abs().max()), label


@pytest.mark.slow
def test_compiled_blocks_select_lql_blocks_as_eager_does():
    """Which blocks an lql query sees is data-dependent, and inductor failed on it (`vr must not be None`) in a
    16K window: a compiled block calls the selection outside its graph, with eager's outputs and gradients."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64, window=16,
                         lql_dim=16, lql_heads=2, lql_recent=64, lql_blocks=2, layer_pattern=("swa", "lql"))
    model = RustleLM(config)
    x = torch.randn(1, 512, 32)
    results = {}
    for name, block in (("eager", model.blocks[1]), ("compiled", torch.compile(model.blocks[1]))):
        leaf = x.clone().requires_grad_(True)
        out = block(leaf, torch.arange(512), None)
        out.square().mean().backward()
        results[name] = out.detach(), leaf.grad
    for eager, compiled in zip(results["eager"], results["compiled"]):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
