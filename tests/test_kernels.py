"""The CPU kernels (kernels/clib.py: attention/segments.c, block/dense.c, gdn/step.c, linear/gemv.c) against their
references and their dispatch; decode/step.c is tested through the model it serves (tests/test_serving.py)."""
import shutil

import pytest
import torch

import kernels.attention as attention
from kernels import clib
from kernels.block import cpu as block_cpu
from kernels.decode import cpu as decode_cpu
from kernels.gdn import cpu as gdn_cpu
from kernels.linear import cpu as linear_cpu
from kernels.attention import attend_few_rows, cpu, naive_segment_attention, segment_attention

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build the kernel with")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def segments_of(k: torch.Tensor, v: torch.Tensor, cuts: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """k, v cut into segments at `cuts`, each a view into a bigger buffer (as model/cache.py's stores hold them)."""
    bounds = [0, *cuts, k.shape[2]]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        kb, vb = (torch.zeros(x.shape[0], x.shape[1], b - a + 7, x.shape[3]) for x in (k, v))
        kb[:, :, :b - a], vb[:, :, :b - a] = k[:, :, a:b], v[:, :, a:b]
        out.append((kb[:, :, :b - a], vb[:, :, :b - a]))
    return out


@pytest.mark.parametrize("kv_heads, heads, dim", [(1, 2, 64), (2, 4, 16), (1, 4, 12)])   # 12: the scalar loops
@pytest.mark.parametrize("T", [1, 5, 32])
@pytest.mark.parametrize("threads", [1, 3])
def test_kernel_matches_the_naive_attention(kv_heads, heads, dim, T, threads, monkeypatch):
    monkeypatch.setattr(cpu, "MIN_SPLIT", 64)            # several threads' pieces even on short caches
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    k, v = torch.randn(1, kv_heads, 700, dim), torch.randn(1, kv_heads, 700, dim)
    q = torch.randn(1, heads, T, dim)
    try:
        for cuts in ((), (300,), (13, 650, 699)):         # one store; branches sharing a prefix; a 1-key segment
            expected_o, expected_lse = naive_segment_attention(q, segments_of(k, v, cuts), 700 - T)
            o, lse = segment_attention(q, segments_of(k, v, cuts), 700 - T)
            assert relative_error(expected_o, o) < 1e-5, cuts
            assert relative_error(expected_lse, lse) < 1e-5, cuts
    finally:
        torch.set_num_threads(previous)


def test_kernel_output_does_not_depend_on_where_segments_end():
    """A warm run (a restored branch: several segments) computes exactly what a cold run (one store) does."""
    torch.manual_seed(1)
    z = torch.randn(1, 1, 20000, 64)
    q = torch.randn(1, 2, 3, 64)
    one = segment_attention(q, [(z, z)], 20000 - 3)[0]
    for cuts in ((5000,), (1, 12345, 19999)):
        parts = segments_of(z, z, cuts)
        assert torch.equal(one, segment_attention(q, parts, 20000 - 3)[0]), cuts


def test_dispatch_takes_the_kernel_only_where_it_applies():
    torch.manual_seed(2)
    k = v = torch.randn(1, 1, 100, 16)
    q = torch.randn(1, 2, 4, 16)
    with torch.inference_mode():
        assert torch.equal(attend_few_rows(q, [(k, v)], 96), segment_attention(q, [(k, v)], 96)[0])
        wide = torch.randn(1, 2, attention.ROWS, 16)                   # more rows than the kernel takes
        assert attend_few_rows(wide, [(torch.randn(1, 1, 200, 16),) * 2], 200 - attention.ROWS) is None
        assert attend_few_rows(q.bfloat16(), [(k.bfloat16(), v.bfloat16())], 96) is None
    assert attend_few_rows(q, [(k, v)], 96) is None                    # training: autograd needs PyTorch's ops


def _forget_the_library() -> None:
    for loaded in (clib.compiled, cpu._library, block_cpu._library, decode_cpu._library, gdn_cpu._library,
                   linear_cpu._library):
        loaded.cache_clear()


def test_a_process_without_path_still_builds_the_library(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("PATH", raising=False)                         # how pytest-lsp starts a server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))                # nothing built before
    _forget_the_library()
    try:
        assert attention.available() and decode_cpu.available(), caplog.text
    finally:
        _forget_the_library()


def test_no_compiler_leaves_the_pytorch_path(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))                # nothing built before
    _forget_the_library()
    try:
        assert not attention.available() and not decode_cpu.available()
        with torch.inference_mode():
            assert attend_few_rows(torch.randn(1, 2, 1, 16), [(torch.randn(1, 1, 10, 16),) * 2], 9) is None
            state = torch.zeros(1, 1, 4, 4)
            assert gdn_cpu.fused_gdn_step(torch.zeros(1, 1, 12), torch.zeros(1, 12, 3), torch.zeros(12, 1, 4),
                                          torch.zeros(1, 1, 2), torch.zeros(1), torch.zeros(1), state, 0.5,
                                          torch.zeros(1, 1, 4), torch.ones(4), 1e-6) is None
            assert linear_cpu.few_rows_linear(torch.randn(1, 1, 8), torch.zeros(4, 8).half()) is None
            assert block_cpu.rms_norm_rows(torch.randn(1, 1, 8), torch.ones(8), 1e-6) is None
        assert "unavailable" in caplog.text
    finally:
        _forget_the_library()


@pytest.mark.parametrize("past, T, recent, blocks", [(0, 300, 64, 2), (600, 5, 128, 3), (650, 1, 64, 1),
                                                     (500, 70, 100, 2), (100, 4, 64, 9)])   # 9: every block
@pytest.mark.parametrize("threads", [1, 3])
def test_selected_attention_matches_the_reference_in_c_and_in_pytorch(past, T, recent, blocks, threads, monkeypatch):
    from kernels.attention import naive_selected_attention, select

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(3)
    z = torch.randn(1, 1, past + T, 64)
    q = torch.randn(1, 2, T, 64) * 2
    expected = naive_selected_attention(q, z, z, past, recent, blocks)
    try:
        for cuts in ((), (100,), (1, (past + T) // 2, past + T - 1)):
            with torch.inference_mode():
                got = select.selected_attention(q, segments_of(z, z, cuts), past, recent, blocks)
            assert relative_error(expected, got) < 1e-5, cuts
        monkeypatch.setattr(select.cpu, "available", lambda: False)         # the PyTorch path, as on a GPU
        monkeypatch.setattr(select, "GATHERED", {"cpu": 200_000})           # in steps of a few rows
        with torch.inference_mode():
            got = select.selected_attention(q, segments_of(z, z, (100,)), past, recent, blocks)
        assert relative_error(expected, got) < 1e-5
    finally:
        torch.set_num_threads(previous)


def test_a_far_key_that_answers_the_query_is_selected():
    """The one key that matches the query, 4,000 positions back among random ones, still gets the attention."""
    from kernels.attention.select import selected_attention

    torch.manual_seed(4)
    z = torch.randn(1, 1, 5000, 64) * 0.1
    z[0, 0, 1000] = torch.linspace(-1, 1, 64) * 3
    q = (torch.linspace(-1, 1, 64) * 3)[None, None, None].expand(1, 2, 1, 64)
    with torch.inference_mode():
        o = selected_attention(q, [(z, z)], 4999, recent=256, blocks=2)
    assert relative_error(z[0, 0, 1000].expand(1, 2, 1, 64), o) < 0.05


def test_selected_attention_gradients_equal_the_reference():
    """Training past recent + 64 * blocks keys: the PyTorch path's gradients, each step recomputed."""
    from kernels.attention import naive_selected_attention, selected_attention

    torch.manual_seed(5)
    q = torch.randn(2, 2, 40, 16, requires_grad=True)
    z = torch.randn(2, 1, 300, 16, requires_grad=True)
    got = selected_attention(q, [(z[:, :, :100], z[:, :, :100]), (z[:, :, 100:], z[:, :, 100:])], 260, 32, 2)
    expected = naive_selected_attention(q, z, z, 260, 32, 2)
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((got * weights).sum(), (q, z))
    for a, b in zip(torch.autograd.grad((expected * weights).sum(), (q, z)), grads):
        assert relative_error(a, b) < 1e-4


def test_selected_attention_on_a_bf16_cache_matches_the_reference():
    """A bf16 cache on CPU (the engine's dtype where the CPU computes bf16): few rows gathered, many through the
    C kernel on an fp32 copy."""
    from kernels.attention import naive_selected_attention, selected_attention

    torch.manual_seed(6)
    z = torch.randn(1, 1, 600, 64).bfloat16()
    for T in (3, 40):
        q = torch.randn(1, 2, T, 64).bfloat16()
        expected = naive_selected_attention(q.float(), z.float(), z.float(), 600 - T, 128, 2)
        with torch.inference_mode():
            got = selected_attention(q, [(z[:, :, :250],) * 2, (z[:, :, 250:],) * 2], 600 - T, 128, 2)
        assert got.dtype == torch.bfloat16 and relative_error(expected, got.float()) < 2e-2, T


@pytest.mark.parametrize("rows, out, width", [(1, 16384, 256), (3, 10, 20), (4, 1536, 256), (2, 256, 768),
                                              (17, 1536, 256), (32, 258, 768), (9, 10, 20),
                                              (9, 1027, 64), (1, 4099, 64)])
def test_few_rows_through_an_fp16_weight_match_the_linear_layer(rows, out, width):
    from kernels.linear import MAX_ROWS, few_rows_linear

    torch.manual_seed(4)
    weight = (torch.randn(out, width) * 0.05).half()
    x = torch.randn(1, rows, width)
    with torch.inference_mode():
        got = few_rows_linear(x, weight)
        assert few_rows_linear(torch.randn(1, MAX_ROWS + 1, width), weight) is None      # many rows: the BLAS
        assert few_rows_linear(x.bfloat16(), weight) is None
    assert got is not None and got.shape == (1, rows, out)
    assert torch.allclose(got, torch.nn.functional.linear(x, weight.float()), atol=1e-4)
    assert few_rows_linear(x, weight) is None                                          # autograd on


@pytest.mark.parametrize("rows, width, hidden", [(1, 256, 768), (4, 256, 768), (3, 20, 10), (17, 256, 768)])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_blocks_dense_part_in_c_matches_pytorch(rows, width, hidden, threads):
    """RMSNorm, and the residual + RMSNorm + SwiGLU MLP on fp16 weights (widths that are not multiples of 4 or 8
    included), against nn.RMSNorm and F.linear on the weights in fp32."""
    import torch.nn.functional as F
    from kernels.block import residual_mlp, rms_norm_rows
    from kernels.linear import MAX_ROWS

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(8)
    x, a, weight = torch.randn(1, rows, width), torch.randn(1, rows, width), torch.rand(width) + 0.5
    gate_up, down = (torch.randn(2 * hidden, width) * 0.1).half(), (torch.randn(width, hidden) * 0.1).half()
    norm = torch.nn.RMSNorm(width, eps=1e-5)
    try:
        with torch.inference_mode():
            norm.weight.copy_(weight)
            normed, got = rms_norm_rows(x, weight, 1e-5), residual_mlp(x, a, weight, 1e-5, gate_up, down)
            y = x + a
            gate, up = F.linear(norm(y), gate_up.float()).chunk(2, dim=-1)
            expected = y + F.linear(F.silu(gate) * up, down.float())
            assert torch.allclose(normed, norm(x), atol=1e-5) and torch.allclose(got, expected, atol=1e-4)
            many = torch.randn(1, MAX_ROWS + 1, width)                           # more rows: PyTorch's
            assert rms_norm_rows(many, weight, 1e-5) is None and residual_mlp(many, many, weight, 1e-5, gate_up,
                                                                             down) is None
            assert residual_mlp(x, a, weight, 1e-5, gate_up.float(), down) is None   # fp32 weights: not this kernel
        assert rms_norm_rows(x, weight, 1e-5) is None                            # autograd on
    finally:
        torch.set_num_threads(previous)
