"""The model as the engine serves it on CPU (model/serving.py): a few tokens in one C call (kernels/decode) against
the PyTorch forward on the same fp16-rounded weights, in pieces of any size, through snapshots and branches of the
cache."""
import copy
import shutil

import pytest
import torch

from model.config import ModelConfig
from model.memory import MemoryReader
from model.model import RustleLM
from model.serving import FewRowsBlock, ServedLM, half_weights

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build the kernels with")


def config(**overrides) -> ModelConfig:
    """Every kind the step knows; lql selects blocks past 16 + 64 keys, so a few hundred tokens take both paths."""
    sizes = dict(vocab_size=97, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, mlp_hidden=64, window=8,
                 gdn_heads=2, gdn_head_dim=8, chunk_size=16, lql_dim=16, lql_heads=2, lql_recent=16, lql_blocks=1,
                 layer_pattern=("gdn", "swa", "gdn", "lql"))
    return ModelConfig(**{**sizes, **overrides})


def keys(shift: bool | str) -> ModelConfig:
    """Plain (False), shifted (True) or token ("token") lql keys; "memory": shifted, with the model's memory of its
    context mixed in (model/memory.py), whose keys the one call's hidden states must fill as the modules' do;
    "layer": the same with a fitted reader of block 1's output (`pair` gives it one)."""
    return config(lql_shift=bool(shift), lql_token_key=shift == "token",
                  memory_weight=0.3 if shift in ("memory", "layer") else 0.0)


def pair(cfg: ModelConfig, read_layer: int | None = None) -> tuple[RustleLM, RustleLM]:
    """(the served model, a plain one with the same weights: values fp16 holds, so both read the same); with
    `read_layer`, both with a fitted memory reader of that block's output."""
    torch.manual_seed(11)
    model = RustleLM(cfg).eval()
    for block in model.blocks:                     # norms away from 1, so that a misplaced one shows
        for norm in (block.attn_norm, block.mlp_norm):
            torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
    with torch.no_grad():
        for module in model.modules():             # values fp16 holds: the served copies equal them
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.copy_(module.weight.half().float())
    if read_layer is not None:
        d = (cfg.d_model, cfg.memory_dim)
        model.fitted_memory = MemoryReader(torch.randn(d), torch.randn(d), 12.0, torch.tensor([2.0, 1, 0, 0, 0, 0, 0]),
                                           layer=read_layer).with_embeddings(model.embed.weight)
    reference = copy.deepcopy(model)
    return half_weights(model), reference


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def steps(model: RustleLM, cache, tokens: list[int]) -> torch.Tensor:
    return torch.cat([model(torch.tensor([[t]]), cache) for t in tokens], 1)


def chunks(model: RustleLM, cache, tokens: list[int], sizes: list[int]) -> torch.Tensor:
    """`tokens` fed in pieces of the given sizes, cycled: every row's logits."""
    outs, at, i = [], 0, 0
    while at < len(tokens):
        piece = tokens[at:at + sizes[i % len(sizes)]]
        outs.append(model(torch.tensor([piece]), cache))
        at, i = at + len(piece), i + 1
    return torch.cat(outs, 1)


@pytest.mark.parametrize("threads,shift", [(1, False), (2, False), (2, True), (2, "token"), (2, "memory"),
                                           (2, "layer")])
def test_a_few_rows_in_one_call_equal_the_modules_in_any_pieces(threads, shift, monkeypatch):
    """Pieces of 1 to 32 tokens (a typed line, a draft) after a 40-token prompt, through both lql paths and swa
    windows that end inside a piece (window 8): the one call against the modules on the same weights. (Pieces
    longer than lql_recent = 16 whose selectable blocks they write themselves take the modules.) Shifted lql keys
    take each piece's first z_t-1 from the cache."""
    import model.serving

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    served, reference = pair(keys(shift), 1 if shift == "layer" else None)
    tokens = torch.randint(0, 97, (1, 300), generator=torch.Generator().manual_seed(6))
    called, forward_rows = [], model.serving.decode.forward_rows
    monkeypatch.setattr(model.serving.decode, "forward_rows", lambda *a: called.append(len(a[2])) or forward_rows(*a))
    try:
        with torch.inference_mode():
            outs = []
            for model in (served, reference):
                cache = model.new_cache()
                model(tokens[:, :40], cache)
                outs.append(chunks(model, cache, tokens[0, 40:].tolist(), [3, 1, 9, 32, 2, 17, 5]))
        tolerance = 1e-4 if shift in ("memory", "layer") else 1e-5   # fp16 keys: a hidden's last bit may round apart
        assert relative_error(*outs) < tolerance, relative_error(*outs)
        assert {1, 2, 3, 5, 9, 17, 32} <= set(called)
        with torch.inference_mode():                  # `last`: the logits of the last rows only
            cache = served.new_cache()
            served(tokens[:, :40], cache)
            assert torch.allclose(served(tokens[:, 40:52], cache, last=1), outs[0][:, 11:12], atol=1e-6)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("threads,shift", [(1, False), (2, False), (1, True), (1, "token"), (1, "memory"),
                                           (1, "layer")])
def test_the_one_call_step_equals_the_forward_through_both_lql_paths(threads, shift):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    served, reference = pair(keys(shift), 1 if shift == "layer" else None)
    assert type(served) is ServedLM and all(type(b) is FewRowsBlock for b in served.blocks)
    tokens = torch.randint(0, 97, (1, 200), generator=torch.Generator().manual_seed(1))
    try:
        with torch.inference_mode():
            outs = []
            for model in (served, reference):         # the first 40 in one forward, then 160 steps
                cache = model.new_cache()
                outs.append(torch.cat([model(tokens[:, :40], cache), steps(model, cache, tokens[0, 40:].tolist())], 1))
        assert cache.position == 200 and cache.layers[1].seen == 200
        # the steps attend all of lql's keys up to 80 and selected blocks after
        assert relative_error(*outs) < (1e-4 if shift in ("memory", "layer") else 1e-5), relative_error(*outs)
    finally:
        torch.set_num_threads(previous)


def test_a_model_with_log_scaled_lql_queries_is_served_by_its_modules_and_answers_the_same():
    """The C step does not scale lql queries: such a model keeps the PyTorch path (and its answers)."""
    served, reference = pair(config(lql_log_base=8))
    assert type(served) is not ServedLM
    tokens = torch.randint(0, 97, (1, 120), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        outs = []
        for model in (served, reference):
            cache = model.new_cache()
            outs.append(torch.cat([model(tokens[:, :40], cache), steps(model, cache, tokens[0, 40:].tolist())], 1))
    assert relative_error(*outs) < 1e-4, relative_error(*outs)


@pytest.mark.parametrize("shift", [False, True, "token"])
def test_steps_after_a_restore_branch_off_and_keep_every_snapshot(shift):
    """Restore an earlier snapshot while a later one holds the positions past it: the lql layer's latents branch
    off (model/cache.py), and both continuations equal cold runs of their whole sequences (shifted keys: the first
    step after a restore takes z_t-1 from the branch it continues)."""
    served, reference = pair(keys(shift))
    g = torch.Generator().manual_seed(2)
    prompt, first, second, third = (torch.randint(0, 97, (n,), generator=g).tolist() for n in (100, 30, 30, 10))
    with torch.inference_mode():
        cache = served.new_cache()
        served(torch.tensor([prompt]), cache)
        at_prompt = cache.snapshot()
        steps(served, cache, first)
        after_first = cache.snapshot()
        cache.restore(at_prompt)
        got_second = steps(served, cache, second)
        cache.restore(after_first)
        got_third = steps(served, cache, third)
        expected_second = reference(torch.tensor([prompt + second]))[:, -30:]
        expected_third = reference(torch.tensor([prompt + first + third]))[:, -10:]
    assert relative_error(got_second, expected_second) < 1e-4
    assert relative_error(got_third, expected_third) < 1e-4


def test_models_the_step_does_not_know_keep_the_module_path():
    """A RoPE lql layer or a full layer: the served model stays a RustleLM of few-row blocks."""
    for cfg in (config(global_rope=True), config(layer_pattern=("gdn", "full"))):
        served, reference = pair(cfg)
        assert type(served) is RustleLM
        tokens = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(3))
        with torch.inference_mode():
            cache = served.new_cache()
            served(tokens[:, :20], cache)
            got = steps(served, cache, tokens[0, 20:].tolist())
            expected = reference(tokens)[:, 20:]
        assert relative_error(got, expected) < 1e-4


def test_a_cache_the_step_cannot_advance_takes_the_module_path():
    """A cache made in bf16 (its ring, latents and conv window): the modules advance it, under autocast as the
    engine would run such a cache."""
    served, reference = pair(config())
    tokens = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(5))
    outs, caches = [], [served.new_cache(dtype=torch.bfloat16), reference.new_cache(dtype=torch.bfloat16)]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for model, cache in zip((served, reference), caches):
            model(tokens[:, :8], cache)
            outs.append(steps(model, cache, tokens[0, 8:].tolist()).float())
    assert not served.few_tokens.takes(caches[0], 1) and caches[0].position == 12
    assert relative_error(*outs) < 2e-2


def test_a_served_model_moved_after_serving_keeps_the_module_path():
    """The step points at the parameters' memory: once `.to()` moves them, steps take the modules again."""
    served, reference = pair(config())
    served.double()
    tokens = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        cache = served.new_cache()
        served(tokens[:, :8], cache)
        got = steps(served, cache, tokens[0, 8:].tolist())
        expected = reference.double()(tokens)[:, 8:]
    assert got.dtype == torch.float64 and relative_error(got, expected) < 1e-6


def test_a_token_outside_the_vocabulary_is_an_error_not_a_read_past_the_embedding():
    served, _ = pair(config())
    with torch.inference_mode():
        cache = served.new_cache()
        served(torch.tensor([[1, 2, 3]]), cache)
        with pytest.raises(IndexError, match="token ids"):
            served(torch.tensor([[5, 97]]), cache)
        assert cache.position == 3                     # nothing advanced
