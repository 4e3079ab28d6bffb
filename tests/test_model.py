"""The hybrid model: every attention kind's parallel form equals its decode form, caches, save/load, transformers."""

import pytest
import torch

from assistant.engine.decode import generate
from kernels.gdn import chunk_gated_delta_rule, naive_gated_delta_rule, recurrent_gated_delta_step
from model.cache import export_snapshots, held_bytes, import_snapshots
from model.config import ModelConfig
from model.io import load_model, save_model
from model.model import RustleLM, count_parameters, twin_config
from tiny_models import relative_error, tiny

PATTERNS = [("full",), ("swa",), ("gdn",), ("lql",), ("gdn", "swa", "gdn", "lql"), ("swa", "full", "gdn", "lql")]


@pytest.mark.parametrize("pattern", PATTERNS, ids="+".join)
@pytest.mark.parametrize("global_rope", [False, True])
@pytest.mark.parametrize("batch", [1, 2])                  # 1: the gdn decode step in C on CPU; 2: PyTorch's
def test_parallel_forward_equals_prefill_then_token_by_token_decode(pattern, global_rope, batch):
    torch.manual_seed(0)
    model = RustleLM(tiny(pattern, global_rope=global_rope)).eval()
    tokens = torch.randint(0, 97, (batch, 53))  # past 3 gdn chunks of 16 and 6 windows of 8
    with torch.no_grad():
        whole = model(tokens)
        cache = model.new_cache(batch=batch)
        parts = [model(tokens[:, :21], cache), model(tokens[:, 21:30], cache)]  # prefill, then a chunk
        parts += [model(tokens[:, t:t + 1], cache) for t in range(30, 53)]
    assert relative_error(whole, torch.cat(parts, dim=1)) < 1e-4
    assert cache.position == 53


@pytest.mark.parametrize("T", [1, 20])                          # a decode step; a typed line (threads over heads)
def test_the_gdn_tokens_in_c_equal_the_layers_pytorch_path(T, monkeypatch):
    from kernels import gdn as kernels_gdn
    from model.layers import gdn

    torch.manual_seed(5)
    layer = gdn.GatedDeltaNet(tiny(("gdn",), gdn_head_dim=64)).eval()
    caches = [layer.new_cache(1, torch.float32, "cpu") for _ in range(2)]
    for cache in caches:   # a state well away from zero, as after a long prefill
        torch.manual_seed(6)
        cache.state.normal_()
        cache.conv.normal_()
    x = torch.randn(1, T, 32) * 3
    ran = []
    monkeypatch.setattr(gdn, "fused_gdn_step", lambda *args: ran.append(kernels_gdn.fused_gdn_step(*args)) or ran[-1])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            fused = layer(x, torch.arange(70, 70 + T), caches[0])
    finally:
        torch.set_num_threads(threads)
    assert ran[0] is not None                                          # the C kernel answered
    with torch.inference_mode():
        monkeypatch.setattr(gdn, "fused_gdn_step", lambda *args: None)
        expected = layer(x, torch.arange(70, 70 + T), caches[1])
    assert relative_error(expected, fused) < 1e-5
    assert relative_error(caches[1].state, caches[0].state) < 1e-5
    assert torch.equal(caches[1].conv, caches[0].conv)
    args = (torch.randn(1, 1, 3 * 128), caches[0].conv, layer.conv.weight, torch.randn(1, 1, 4), layer.A_log,
            layer.dt_bias, caches[0].state, 0.125, torch.randn(1, 1, 128), layer.norm.weight, 1e-6)
    assert kernels_gdn.fused_gdn_step(*args) is None                  # autograd on: PyTorch's ops
    with torch.inference_mode():
        assert kernels_gdn.fused_gdn_step(*args) is not None
        assert kernels_gdn.fused_gdn_step(*(a.bfloat16() if isinstance(a, torch.Tensor) else a for a in args)) is None


def test_chunked_and_recurrent_gated_delta_rule_equal_the_naive_recurrence():
    torch.manual_seed(0)
    B, H, T, K, V = 2, 3, 150, 16, 8
    q, k = (torch.nn.functional.normalize(torch.randn(B, H, T, K), dim=-1) for _ in range(2))
    v, g, beta, s0 = torch.randn(B, H, T, V), -torch.rand(B, H, T), torch.rand(B, H, T), torch.randn(B, H, K, V)
    ref, ref_state = naive_gated_delta_rule(q, k, v, g, beta, 0.25, s0)
    out, state = chunk_gated_delta_rule(q, k, v, g, beta, 0.25, s0, chunk_size=32)
    assert relative_error(ref, out) < 1e-4 and relative_error(ref_state, state) < 1e-4
    s = s0.clone()
    steps = torch.stack([recurrent_gated_delta_step(q[:, :, t], k[:, :, t], v[:, :, t], g[:, :, t], beta[:, :, t],
                                                    0.25, s) for t in range(T)], dim=2)
    assert relative_error(ref, steps) < 1e-4 and relative_error(ref_state, s) < 1e-4


def test_chunked_gated_delta_rule_gradients_equal_the_naive_recurrence():
    torch.manual_seed(0)
    B, H, T, K, V = 1, 2, 70, 8, 4
    q, k = (torch.nn.functional.normalize(torch.randn(B, H, T, K), dim=-1) for _ in range(2))
    inputs = [q, k, torch.randn(B, H, T, V), -torch.rand(B, H, T), torch.rand(B, H, T), torch.randn(B, H, K, V)]
    grads = []
    for op in (naive_gated_delta_rule, lambda *a: chunk_gated_delta_rule(*a[:5], 0.25, a[6], chunk_size=16)):
        leaves = [x.clone().requires_grad_() for x in inputs]
        out, state = op(*leaves[:5], 0.25, leaves[5])
        (out.square().sum() + state.sin().sum()).backward()
        grads.append([x.grad for x in leaves])
    for ref, got in zip(*grads):
        assert relative_error(ref, got) < 1e-4


@pytest.mark.parametrize("length, split, typed, select", [(40, 25, 17, {}),
                                                          (300, 150, 100, dict(lql_recent=16, lql_blocks=1))])
def test_snapshots_form_a_tree_each_branch_continues_as_an_uninterrupted_run(length, split, typed, select):
    """The second case selects lql blocks, whose bounds the stores keep: a branch that overwrites positions
    must not see the bounds of the positions it replaced."""
    torch.manual_seed(0)
    model = RustleLM(tiny(("gdn", "swa", "full", "lql"), **select)).eval()
    tokens = torch.randint(0, 97, (1, length))
    detour = torch.randint(0, 97, (1, typed))
    with torch.no_grad():
        straight = model(tokens)
        branched = model(torch.cat([tokens[:, :split], detour, tokens[:, split:]], dim=1))
        cache = model.new_cache()
        model(tokens[:, :split], cache)
        snap = cache.snapshot()
        model(detour, cache)              # the user typed something else…
        later = cache.snapshot()
        cache.restore(snap)               # …and took it back
        got = model(tokens[:, split:], cache)
        assert [n for _, n in cache.layers[3].base] == [split]   # the branch reads the shared prefix, copies nothing
        cache.restore(later)              # the other branch is intact: its positions were not overwritten
        got_later = model(tokens[:, split:], cache)
        cache.forget(later)
        cache.restore(snap)               # nothing holds the detour now: this branch writes in place
        store = cache.layers[3].store
        again = model(tokens[:, split:], cache)
    assert relative_error(straight[:, split:], got) < 1e-5
    assert relative_error(branched[:, split + typed:], got_later) < 1e-5
    assert relative_error(straight[:, split:], again) < 1e-5 and cache.layers[3].store is store


def test_decode_steps_on_branches_see_the_bounds_of_their_own_blocks():
    """One token at a time on a branch that reads a shared prefix (two segments, whose joined lql bounds the
    cache keeps between steps), across new blocks, then on the other branch: each as an uninterrupted run."""
    torch.manual_seed(3)
    model = RustleLM(tiny(("gdn", "swa", "gdn", "lql"), lql_recent=16, lql_blocks=1)).eval()
    tokens, detour = torch.randint(0, 97, (1, 330)), torch.randint(0, 97, (1, 90))
    with torch.no_grad():
        straight = model(tokens)
        branched = model(torch.cat([tokens[:, :170], detour, tokens[:, 170:]], dim=1))
        cache = model.new_cache()
        model(tokens[:, :170], cache)
        snap = cache.snapshot()
        model(detour, cache)
        later = cache.snapshot()
        for branch, expected, segments in ((snap, straight[:, 170:], 1), (later, branched[:, 260:], 0),
                                           (snap, straight[:, 170:], 1)):
            cache.restore(branch)
            got = torch.cat([model(tokens[:, t:t + 1], cache) for t in range(170, 330)], 1)
            assert len(cache.layers[3].base) == segments and relative_error(expected, got) < 1e-5


def test_exported_snapshots_restore_in_a_new_cache_through_a_file(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = RustleLM(tiny(("gdn", "swa", "full", "lql"))).eval()
    tokens = torch.randint(0, 97, (1, 60))
    with torch.no_grad():
        straight = model(tokens)
        cache = model.new_cache()
        model(tokens[:, :20], cache)
        early = cache.snapshot()
        model(tokens[:, 20:45], cache)
        tensors, plain = export_snapshots([early, cache.snapshot()])
        save_file(tensors, str(tmp_path / "state.safetensors"))
        fresh = model.new_cache()
        early_again, late_again = import_snapshots(fresh, load_file(str(tmp_path / "state.safetensors")), plain)
        fresh.restore(late_again)
        late = model(tokens[:, 45:], fresh)
        fresh.restore(early_again)
        early_out = model(tokens[:, 20:], fresh)
    assert relative_error(straight[:, 45:], late) < 1e-5
    assert relative_error(straight[:, 20:], early_out) < 1e-5


def test_held_bytes_count_a_shared_prefix_once():
    model = RustleLM(tiny(("lql", "gdn"))).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 300)), cache)
        snaps = [cache.snapshot()]
        model(torch.randint(0, 97, (1, 10)), cache)
        snaps.append(cache.snapshot())   # the same store: counted once
        one_store = held_bytes(cache, snaps)
        cache.restore(snaps[0])
        model(torch.randint(0, 97, (1, 10)), cache)   # a second branch: its own store from here
    store_bytes = cache.layers[0].store.nbytes()
    assert held_bytes(cache, snaps) == one_store + store_bytes


def test_cache_bytes_per_token_by_kind():
    model = RustleLM(tiny(("full", "lql", "swa", "gdn"))).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 64)), cache)
    full, lql, swa, gdn = (layer.nbytes() for layer in cache.layers)
    assert full == 64 * 2 * 2 * 8 * 4 and lql == 64 * 16 * 4  # K and V of 2 kv heads of 8, vs a 16-wide latent
    assert swa == 2 * 2 * 8 * 8 * 4                           # the window, whatever the context
    assert gdn == 2 * 8 * 8 * 4 + 3 * 2 * 8 * 3 * 4           # state + conv tail


def test_save_load_round_trip_and_transformers_agree(tmp_path):
    import model.hf  # noqa: F401  (registers the "rustle" type)
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(3)
    model = RustleLM(tiny(vocab_size=16384)).eval()
    with torch.no_grad():  # a livelier random model, whose greedy tokens vary
        for p in model.parameters():
            p.normal_(0, 0.3)
    save_model(model, tmp_path, tokenizer=None)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = load_model(tmp_path)
    prompt = torch.randint(0, 16384, (12,))
    assert torch.equal(model(prompt[None]), loaded(prompt[None]))
    config = AutoConfig.from_pretrained(str(tmp_path), local_files_only=True)
    assert config.to_model_config() == model.config
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), local_files_only=True).eval()
    ours = list(generate(model, prompt.tolist(), max_new_tokens=12))
    theirs = hf.generate(prompt[None], max_new_tokens=12, do_sample=False, use_cache=False,
                         pad_token_id=6, eos_token_id=None)[0, 12:].tolist()
    assert ours == theirs and len(set(ours)) > 1


def test_generate_streams_and_stops_on_the_callback():
    torch.manual_seed(0)
    model = RustleLM(tiny()).eval()
    stream = generate(model, [1, 2, 3], max_new_tokens=50, temperature=0.8, top_p=0.9,
                     stop=lambda produced: len(produced) == 5, generator=torch.Generator().manual_seed(0))
    assert len(list(stream)) == 5


@pytest.mark.parametrize("pattern", PATTERNS, ids="+".join)
def test_gradients_reach_every_parameter(pattern):
    torch.manual_seed(0)
    model = RustleLM(tiny(pattern))
    tokens = torch.randint(0, 97, (2, 40))
    logits = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("pattern", [("gdn", "swa", "gdn", "lql"), ("full", "swa")])
def test_the_parameter_count_on_the_meta_device_is_the_built_models(pattern):
    config = tiny(pattern)
    assert count_parameters(config) == sum(p.numel() for p in RustleLM(config).parameters())


def test_the_twin_has_the_same_parameter_count_within_a_percent():
    config = ModelConfig()
    twin = twin_config(config)
    assert set(twin.layer_pattern) == {"full"} and twin.global_rope
    assert abs(count_parameters(twin) - count_parameters(config)) / count_parameters(config) < 0.01


def test_an_untied_head_round_trips_and_differs_from_the_embedding(tmp_path):
    torch.manual_seed(0)
    model = RustleLM(tiny(tie_embeddings=False)).eval()
    assert model.head is not None and not torch.equal(model.head.weight, model.embed.weight)
    save_model(model, tmp_path)
    tokens = torch.randint(0, 97, (1, 9))
    assert torch.equal(model(tokens), load_model(tmp_path)(tokens))
    assert count_parameters(tiny(tie_embeddings=False)) == count_parameters(tiny()) + 97 * 32


def test_bad_configs_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="unknown layer kinds"):
        ModelConfig(layer_pattern=("full", "mamba"))


def test_fused_loss_and_gradients_equal_the_plain_head_and_cross_entropy():
    torch.manual_seed(0)
    model = RustleLM(tiny())
    tokens, targets = torch.randint(0, 97, (2, 37)), torch.randint(0, 97, (2, 37))
    targets[0, :5] = -100  # ignored positions add neither loss nor gradient
    plain = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten(), ignore_index=-100)
    expected = torch.autograd.grad(plain, list(model.parameters()))
    fused = model.loss(tokens, targets, chunk=16)  # chunks that do not divide the 74 positions
    got = torch.autograd.grad(fused, list(model.parameters()))
    assert torch.allclose(fused, plain, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), expected, got):
        assert relative_error(a, b) < 1e-5, name
    with torch.no_grad():
        assert torch.allclose(model.loss(tokens, targets, chunk=16), plain, atol=1e-6)


def test_weighted_fused_loss_and_gradients_equal_the_weighted_mean_of_plain_cross_entropy():
    torch.manual_seed(0)
    model = RustleLM(tiny())
    tokens, targets = torch.randint(0, 97, (2, 37)), torch.randint(0, 97, (2, 37))
    targets[1, :3] = -100
    weights = torch.rand(2, 37) * 3
    each = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten(), ignore_index=-100,
                                             reduction="none")
    kept = weights.flatten() * (targets.flatten() != -100)
    plain = (each * kept).sum() / kept.sum()
    expected = torch.autograd.grad(plain, list(model.parameters()))
    fused = model.loss(tokens, targets, chunk=16, weights=weights)
    got = torch.autograd.grad(fused, list(model.parameters()))
    assert torch.allclose(fused, plain, atol=1e-6)
    assert not torch.allclose(fused, model.loss(tokens, targets, chunk=16), atol=1e-3)   # the weights count
    for (name, _), a, b in zip(model.named_parameters(), expected, got):
        assert relative_error(a, b) < 1e-5, name
    with torch.no_grad():
        assert torch.allclose(model.loss(tokens, targets, chunk=16, weights=weights), plain, atol=1e-6)


@pytest.mark.parametrize("kv_heads, split_min", [(2, 16384), (1, 16384), (1, 128)])
@pytest.mark.parametrize("kernel", [True, False])             # few rows through the C kernel, or PyTorch only
def test_attention_over_cache_segments_merges_to_the_masked_attention(kv_heads, split_min, kernel, monkeypatch):
    import torch.nn.functional as F

    from model.layers import common

    monkeypatch.setattr(common, "SPLIT_MIN", split_min)    # 128: long segments are cut across 3 threads (split-K)
    attend = common.attend_segments if kernel else common.merged_attention
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    torch.manual_seed(0)
    k, v = torch.randn(1, kv_heads, 1000, 16), torch.randn(1, kv_heads, 1000, 16)
    for T in (300, 32, 1):                             # a long prefill, a new cursor's few lines, a decode step
        q = torch.randn(1, 4, T, 16)
        mask = torch.ones(T, 1000, dtype=torch.bool).tril(1000 - T)
        expected = F.scaled_dot_product_attention(q, k[:, :, :1000], v[:, :, :1000], attn_mask=mask, enable_gqa=True)
        for cuts in ((), (400,), (250, 600)):          # one store; branches that share a prefix
            bounds = [0, *cuts, 1000]
            segments = [(k[:, :, a:b], v[:, :, a:b]) for a, b in zip(bounds, bounds[1:])]
            with torch.inference_mode():               # the serving path
                got = attend(q, segments, past=1000 - T)
            assert relative_error(expected, got) < 1e-5, (T, cuts)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("field, value", [("vocab_size", 10 ** 12), ("n_heads", 0), ("d_model", 2.5),
                                          ("layer_pattern", ["gdn"] * 100_000), ("head_dim", "64")])
def test_absurd_sizes_are_refused_before_anything_is_allocated(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value})


def test_a_model_folder_that_does_not_fit_its_config_gets_one_message(tmp_path, rustle):
    import json

    from conftest import save_tiny_model

    from model.io import ModelFolderError, load_model

    folder = save_tiny_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "mlp_hidden": 96}))    # the weights are for 64
    with pytest.raises(ModelFolderError, match="parameters"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    proc = rustle("complete", "--model", str(folder), "data/workspace/src/lib.rs:10:5", check=False)
    assert proc.returncode == 2 and "model not loaded" in proc.stdout and "Traceback" not in proc.stderr
