"""The gated delta rule's recurrence in one Triton kernel (GPU): one program per (batch, head) holds its
[K, V] state in registers in fp32 and walks the T steps (decode: T = 1; no gradient). Runs on CUDA tensors,
and on CPU tensors under TRITON_INTERPRET=1 (tests). The reference is naive.py."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _recurrence(Q, K, V, G, BETA, S, O, T, scale, DK: tl.constexpr, DV: tl.constexpr):
    bh = tl.program_id(0)
    ks, vs = tl.arange(0, DK), tl.arange(0, DV)
    cell = ks[:, None] * DV + vs[None, :]
    state = tl.load(S + bh * DK * DV + cell)
    for t in range(T):
        step = bh * T + t
        q = tl.load(Q + step * DK + ks).to(tl.float32) * scale
        k = tl.load(K + step * DK + ks).to(tl.float32)
        v = tl.load(V + step * DV + vs).to(tl.float32)
        state = state * tl.exp(tl.load(G + step).to(tl.float32))
        error = v - tl.sum(k[:, None] * state, 0)
        state = state + k[:, None] * (tl.load(BETA + step).to(tl.float32) * error)[None, :]
        tl.store(O + step * DV + vs, tl.sum(q[:, None] * state, 0))
    tl.store(S + bh * DK * DV + cell, state)


def fused_recurrent_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                     beta: torch.Tensor, scale: float, state: torch.Tensor) -> torch.Tensor:
    """q, k [B, H, T, K], v [B, H, T, V], g, beta [B, H, T]; `state` [B, H, K, V] fp32 contiguous, advanced in
    place past the T steps. Returns o [B, H, T, V] fp32."""
    B, H, T, DK = k.shape
    DV = v.shape[-1]
    assert state.dtype == torch.float32 and state.is_contiguous(), "the state is fp32 and contiguous"
    o = torch.empty(B, H, T, DV, dtype=torch.float32, device=q.device)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    _recurrence[(B * H,)](q, k, v, g, beta, state, o, T, scale, DK=DK, DV=DV)
    return o
