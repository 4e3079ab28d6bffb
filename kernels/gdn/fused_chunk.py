"""The chunkwise gated delta rule (chunk.py's WY form) in one Triton kernel, forward only (GPU prefill; training
keeps chunk.py's PyTorch form, whose autograd is the backward). One program per (batch, head) carries the
[K, V] state in fp32 across chunks of C steps; inside a chunk, (I + A)^-1 for the strictly lower triangular A
is the finite series sum (-A)^n, computed as (I - A)(I + A^2)(I + A^4)... (log2 C matrix products). Runs on
CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1 (tests). The reference is naive.py."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _dot(a, b):
    """Exact fp32 products (a GPU's default for fp32 is TF32, 10-bit mantissas); bf16 inputs are unaffected."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _chunks(Q, K, V, G, BETA, S, O, T, scale,
            DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, LOG2C: tl.constexpr):
    bh = tl.program_id(0)
    steps, ks, vs = tl.arange(0, C), tl.arange(0, DK), tl.arange(0, DV)
    lower = steps[:, None] > steps[None, :]                              # strictly lower
    causal = steps[:, None] >= steps[None, :]
    eye = tl.where(steps[:, None] == steps[None, :], 1.0, 0.0)
    state = tl.load(S + bh * DK * DV + ks[:, None] * DV + vs[None, :])
    for start in range(0, T, C):
        t = start + steps
        real = t < T                                                     # padding: g = 0, beta = 0, q = k = v = 0
        q = tl.load(Q + (bh * T + t)[:, None] * DK + ks[None, :], mask=real[:, None], other=0.0).to(tl.float32)
        k = tl.load(K + (bh * T + t)[:, None] * DK + ks[None, :], mask=real[:, None], other=0.0).to(tl.float32)
        v = tl.load(V + (bh * T + t)[:, None] * DV + vs[None, :], mask=real[:, None], other=0.0).to(tl.float32)
        g = tl.cumsum(tl.load(G + bh * T + t, mask=real, other=0.0).to(tl.float32), 0)
        beta = tl.load(BETA + bh * T + t, mask=real, other=0.0).to(tl.float32)
        gap = g[:, None] - g[None, :]
        decay = tl.exp(tl.where(causal, gap, float("-inf")))           # exp(g_i - g_j) for j <= i, else 0
        k_beta = k * beta[:, None]
        a = tl.where(lower, _dot(k_beta, tl.trans(k)) * decay, 0.0)
        inverse = eye - a                                                # (I + A)^-1 = (I - A)(I + A^2)(I + A^4)...
        power = a
        for _ in tl.static_range(1, LOG2C):
            power = _dot(power, power)
            inverse = _dot(inverse, eye + power)
        u = _dot(inverse, v * beta[:, None])                           # pseudo-values
        w = _dot(inverse, k_beta * tl.exp(g)[:, None])                 # what the carried state subtracts
        new = u - _dot(w, state)
        scores = tl.where(causal, _dot(q, tl.trans(k)) * decay, 0.0) * scale
        o = _dot(q * tl.exp(g)[:, None] * scale, state) + _dot(scores, new)
        tl.store(O + (bh * T + t)[:, None] * DV + vs[None, :], o, mask=real[:, None])
        last = tl.sum(tl.where(steps == C - 1, g, 0.0), 0)
        state = state * tl.exp(last) + _dot(tl.trans(k * tl.exp(last - g)[:, None]), new)
    tl.store(S + bh * DK * DV + ks[:, None] * DV + vs[None, :], state)


def fused_chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                 beta: torch.Tensor, scale: float, state: torch.Tensor | None = None,
                                 chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """chunk.py's contract: q, k [B, H, T, K], v [B, H, T, V], g, beta [B, H, T]; returns (o [B, H, T, V] fp32,
    final state [B, H, K, V] fp32); `state` is read, not written."""
    B, H, T, DK = k.shape
    DV, C = v.shape[-1], chunk_size
    assert C & (C - 1) == 0 and C >= 16, "a power-of-2 chunk of at least 16 steps"
    final = (torch.zeros(B, H, DK, DV, dtype=torch.float32, device=q.device) if state is None
             else state.float().clone().contiguous())
    o = torch.empty(B, H, T, DV, dtype=torch.float32, device=q.device)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    _chunks[(B * H,)](q, k, v, g, beta, final, o, T, scale, DK=DK, DV=DV, C=C, LOG2C=C.bit_length() - 1)
    return o, final
