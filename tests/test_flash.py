"""The Triton kernels against their naive references: attention (kernels/attention/flash.py), forward and
gradients, and the gated delta rule's chunkwise form and recurrence (kernels/gdn/fused_chunk.py,
fused_recurrent.py); on CUDA where a GPU is, else under Triton's interpreter on CPU tensors (fp32: the
interpreter's bf16 is wrong)."""
import os

import pytest
import torch

if not torch.cuda.is_available():   # also set by conftest.py, before any test imports a kernel
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from kernels.attention import fused_attention  # noqa: E402
from kernels.attention.flash import FlashAttention, flash_attention  # noqa: E402
from kernels.attention.naive import naive_segment_attention  # noqa: E402
from kernels.gdn import naive_gated_delta_rule, recurrent_gated_delta_step  # noqa: E402
from kernels.gdn.fused_chunk import ChunkGatedDeltaRule, fused_chunk_gated_delta_rule  # noqa: E402
from kernels.gdn.fused_recurrent import fused_recurrent_gated_delta_rule  # noqa: E402
from model.layers.common import causal_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("batch, heads, kv_heads, T, past, dim, window", [
    (1, 2, 1, 1, 50, 16, 0),       # an lql decode step: two heads on one latent
    (2, 4, 2, 37, 0, 16, 0),       # a GQA prefill, T not a multiple of the blocks
    (1, 4, 2, 20, 100, 32, 0),     # a few tokens after a cache
    (1, 2, 1, 40, 30, 16, 8),      # sliding window, past keys partly outside it
    (2, 4, 2, 70, 0, 16, 24),      # sliding window over several query blocks
])
def test_flash_attention_and_its_gradients_match_the_reference(batch, heads, kv_heads, T, past, dim, window):
    torch.manual_seed(0)
    q = torch.randn(batch, heads, T, dim, device=DEVICE, requires_grad=True)
    k, v = (torch.randn(batch, kv_heads, past + T, dim, device=DEVICE, requires_grad=True) for _ in range(2))
    out = FlashAttention.apply(q, k, v, past, window)
    grad = torch.randn_like(out)
    out.backward(grad)
    got = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    expected, expected_lse = naive_segment_attention(q, [(k, v)], past, window)
    expected.backward(grad)
    assert relative_error(expected, out) < 1e-5
    assert relative_error(expected_lse, flash_attention(q.detach(), k.detach(), v.detach(), past, window)[1]) < 1e-5
    for name, x, g in zip("qkv", (q, k, v), got):
        assert relative_error(x.grad, g) < 1e-4, name


@pytest.mark.parametrize("T, keys", [(1, 1000), (3, 700), (1, 100)])
def test_a_decode_step_split_across_programs_merges_to_the_reference(T, keys, monkeypatch):
    from kernels.attention import flash

    monkeypatch.setattr(flash, "SPLIT_KEYS", 64)        # flash-decoding: the keys in pieces of 64, merged
    torch.manual_seed(5)
    q = torch.randn(1, 4, T, 16, device=DEVICE)
    k, v = (torch.randn(1, 2, keys, 16, device=DEVICE) for _ in range(2))
    expected, expected_lse = naive_segment_attention(q, [(k, v)], keys - T)
    out, lse = flash_attention(q, k, v, keys - T)
    assert relative_error(expected, out) < 1e-5 and relative_error(expected_lse, lse) < 1e-5


def test_dispatch_keeps_cpu_tensors_on_the_pytorch_path():
    q, k = torch.randn(1, 2, 3, 16), torch.randn(1, 1, 8, 16)
    assert fused_attention(q, k, k, 5) is None
    expected, _ = naive_segment_attention(q, [(k, k)], 5)
    assert relative_error(expected, causal_attention(q, k, k, 5)) < 1e-5


@pytest.mark.parametrize("T", [1, 7])
def test_fused_recurrence_matches_the_naive_rule_and_advances_the_state(T):
    torch.manual_seed(2)
    B, H, K, V = 2, 3, 16, 32
    q, k = (torch.nn.functional.normalize(torch.randn(B, H, T, K, device=DEVICE), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, V, device=DEVICE)
    g, beta = -torch.rand(B, H, T, device=DEVICE), torch.rand(B, H, T, device=DEVICE)
    start = torch.randn(B, H, K, V, device=DEVICE)
    expected, final = naive_gated_delta_rule(q, k, v, g, beta, 0.25, start)
    state = start.clone()
    assert relative_error(expected, fused_recurrent_gated_delta_rule(q, k, v, g, beta, 0.25, state)) < 1e-5
    assert relative_error(final, state) < 1e-5
    state = start.clone()                            # the decode step the model calls dispatches here on CUDA
    step = recurrent_gated_delta_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], beta[:, :, 0], 0.25, state)
    assert relative_error(expected[:, :, 0], step) < 1e-5


@pytest.mark.parametrize("T, dk, dv, chunk", [(40, 16, 32, 16), (64, 16, 16, 16), (37, 32, 16, 32)])
def test_fused_chunks_match_the_naive_rule_from_a_state(T, dk, dv, chunk):
    torch.manual_seed(3)
    B, H = 2, 2
    q, k = (torch.nn.functional.normalize(torch.randn(B, H, T, dk, device=DEVICE), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, dv, device=DEVICE)
    g, beta = -0.5 * torch.rand(B, H, T, device=DEVICE), torch.rand(B, H, T, device=DEVICE)
    start = torch.randn(B, H, dk, dv, device=DEVICE)
    expected, final = naive_gated_delta_rule(q, k, v, g, beta, 0.3, start)
    got, got_final = fused_chunk_gated_delta_rule(q, k, v, g, beta, 0.3, start, chunk)
    assert relative_error(expected, got) < 1e-5 and relative_error(final, got_final) < 1e-5


@pytest.mark.parametrize("T, chunk", [(40, 16), (33, 16)])
def test_chunk_gradients_match_the_naive_rule(T, chunk):
    torch.manual_seed(4)
    B, H, dk, dv = 2, 2, 16, 32
    q, k = (torch.nn.functional.normalize(torch.randn(B, H, T, dk, device=DEVICE), dim=-1).requires_grad_()
            for _ in range(2))
    v = torch.randn(B, H, T, dv, device=DEVICE, requires_grad=True)
    g = (-0.5 * torch.rand(B, H, T, device=DEVICE)).requires_grad_()
    beta = torch.rand(B, H, T, device=DEVICE, requires_grad=True)
    start = torch.randn(B, H, dk, dv, device=DEVICE, requires_grad=True)
    inputs = (q, k, v, g, beta, start)
    out, final = ChunkGatedDeltaRule.apply(q, k, v, g, beta, 0.3, start, chunk)
    d_out, d_final = torch.randn_like(out), torch.randn_like(final)
    ((out * d_out).sum() + (final * d_final).sum()).backward()
    got = [x.grad.clone() for x in inputs]
    for x in inputs:
        x.grad = None
    expected, expected_final = naive_gated_delta_rule(q, k, v, g, beta, 0.3, start)
    ((expected * d_out).sum() + (expected_final * d_final).sum()).backward()
    for name, x, grad in zip(("q", "k", "v", "g", "beta", "state"), inputs, got):
        assert relative_error(x.grad, grad) < 1e-4, name


def test_fused_chunks_stay_exact_when_keys_repeat():
    """A trained model's keys: nearly one direction for many steps, little decay, large beta. Within a chunk
    A = (beta k k^T * decay) then has entries near 1, and a power series for (I + A)^-1 sums terms of
    binomial size that cancel (the shipped model's real inputs gave 5e-3 relative error that way)."""
    torch.manual_seed(5)
    B, H, T, dk, dv = 1, 2, 128, 32, 16
    direction = torch.nn.functional.normalize(torch.randn(B, H, 1, dk, device=DEVICE), dim=-1)
    k = torch.nn.functional.normalize(direction + 0.15 * torch.randn(B, H, T, dk, device=DEVICE), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(B, H, T, dk, device=DEVICE), dim=-1)
    v = torch.randn(B, H, T, dv, device=DEVICE)
    g, beta = -0.01 * torch.rand(B, H, T, device=DEVICE), 0.8 + 0.15 * torch.rand(B, H, T, device=DEVICE)
    expected, final = naive_gated_delta_rule(*(x.double() for x in (q, k, v, g, beta)), 0.3)
    got, got_final = fused_chunk_gated_delta_rule(q, k, v, g, beta, 0.3, None, 64)
    assert relative_error(expected, got.double()) < 1e-5 and relative_error(final, got_final.double()) < 1e-5
