"""The chunkwise gated delta rule (chunk.py's WY form) in Triton, forward and backward (GPU).

Forward: one program per (batch, head) carries the [K, V] state in fp32 across chunks of C steps; inside a
chunk, (I + A)^-1 for the strictly lower triangular A by forward substitution (`_inverse`). For training it keeps
each chunk's starting state.
Backward: the exact gradient of the same function through the recurrence, chunk by chunk from the last: each
chunk's states are recomputed from its saved start into a scratch buffer, then walked back step by step
(per step: dS += scale q dO^T, then the delta rule's update reversed). Runs on CUDA tensors, and on CPU tensors
under TRITON_INTERPRET=1 (tests). The reference is naive.py."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _dot(a, b):
    """Exact fp32 products (a GPU's default for fp32 is TF32, 10-bit mantissas); bf16 inputs are unaffected."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _inverse(a, steps, eye, C: tl.constexpr):
    """(I + A)^-1 for a strictly lower triangular A by forward substitution, row i = e_i - sum_{j<i} A_ij row j, so
    every intermediate is an entry of the inverse. The power series (I - A)(I + A^2)(I + A^4)... is exact in theory
    but sums terms of binomial size that cancel when keys repeat, as a trained model's do (tests/test_flash.py)."""
    inverse = eye
    for i in range(1, C):
        row = tl.sum(tl.where(steps[:, None] == i, a, 0.0), 0)                # A[i, :]
        inverse = tl.where(steps[:, None] == i, eye - tl.sum(row[:, None] * inverse, 0)[None, :], inverse)
    return inverse


@triton.jit
def _chunks(Q, K, V, G, BETA, S, O, STARTS, T, scale,
            DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, SAVE: tl.constexpr):
    bh = tl.program_id(0)
    steps, ks, vs = tl.arange(0, C), tl.arange(0, DK), tl.arange(0, DV)
    lower = steps[:, None] > steps[None, :]                              # strictly lower
    causal = steps[:, None] >= steps[None, :]
    eye = tl.where(steps[:, None] == steps[None, :], 1.0, 0.0)
    state = tl.load(S + bh * DK * DV + ks[:, None] * DV + vs[None, :])
    for start in range(0, T, C):
        if SAVE:                                                         # the chunk's starting state, for backward
            tl.store(STARTS + ((bh * tl.cdiv(T, C) + start // C) * DK + ks[:, None]) * DV + vs[None, :], state)
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
        inverse = _inverse(a, steps, eye, C)
        u = _dot(inverse, v * beta[:, None])                           # pseudo-values
        w = _dot(inverse, k_beta * tl.exp(g)[:, None])                 # what the carried state subtracts
        new = u - _dot(w, state)
        scores = tl.where(causal, _dot(q, tl.trans(k)) * decay, 0.0) * scale
        o = _dot(q * tl.exp(g)[:, None] * scale, state) + _dot(scores, new)
        tl.store(O + (bh * T + t)[:, None] * DV + vs[None, :], o, mask=real[:, None])
        last = tl.sum(tl.where(steps == C - 1, g, 0.0), 0)
        state = state * tl.exp(last) + _dot(tl.trans(k * tl.exp(last - g)[:, None]), new)
    tl.store(S + bh * DK * DV + ks[:, None] * DV + vs[None, :], state)


Pair = tuple[torch.Tensor, torch.Tensor]


def fused_chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                 beta: torch.Tensor, scale: float, state: torch.Tensor | None = None,
                                 chunk_size: int = 64, starts: torch.Tensor | None = None) -> Pair:
    """chunk.py's contract: q, k [B, H, T, K], v [B, H, T, V], g, beta [B, H, T]; returns (o [B, H, T, V] fp32,
    final state [B, H, K, V] fp32); `state` is read, not written. `starts` [B * H, chunks, K, V], if given,
    receives each chunk's starting state."""
    B, H, T, DK = k.shape
    DV, C = v.shape[-1], chunk_size
    assert C & (C - 1) == 0 and C >= 16, "a power-of-2 chunk of at least 16 steps"
    final = (torch.zeros(B, H, DK, DV, dtype=torch.float32, device=q.device) if state is None
             else state.float().clone().contiguous())
    o = torch.empty(B, H, T, DV, dtype=torch.float32, device=q.device)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    _chunks[(B * H,)](q, k, v, g, beta, final, o, o if starts is None else starts, T, scale, DK=DK, DV=DV, C=C,
                      SAVE=starts is not None)
    return o, final


@triton.jit
def _backward(Q, K, V, G, BETA, STARTS, DO, DS, DQ, DK_, DV_, DG, DBETA, SCRATCH, T, scale,
              DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr):
    """Gradients of every step of one (batch, head), last chunk first; DS holds dL/d(final state) on entry and
    dL/d(initial state) on exit."""
    bh = tl.program_id(0)
    ks, vs = tl.arange(0, DK), tl.arange(0, DV)
    cell = ks[:, None] * DV + vs[None, :]
    chunks = tl.cdiv(T, C)
    d_state = tl.load(DS + bh * DK * DV + cell)
    for back in range(0, chunks):
        n = chunks - 1 - back
        length = tl.minimum(C, T - n * C)                                # the last chunk may be short
        state = tl.load(STARTS + (bh * chunks + n) * DK * DV + cell)
        tl.debug_barrier()                                               # the last chunk's scratch reads done
        for j in range(0, length):                                       # the chunk's states before each step
            tl.store(SCRATCH + (bh * C + j) * DK * DV + cell, state)
            step = bh * T + n * C + j
            k = tl.load(K + step * DK + ks).to(tl.float32)
            state = state * tl.exp(tl.load(G + step).to(tl.float32))
            error = tl.load(V + step * DV + vs).to(tl.float32) - tl.sum(k[:, None] * state, 0)
            state = state + k[:, None] * (tl.load(BETA + step).to(tl.float32) * error)[None, :]
        tl.debug_barrier()                                               # the scratch states written, then read
        for back_step in range(0, length):
            j = length - 1 - back_step
            step = bh * T + n * C + j
            q = tl.load(Q + step * DK + ks).to(tl.float32) * scale
            k = tl.load(K + step * DK + ks).to(tl.float32)
            do = tl.load(DO + step * DV + vs).to(tl.float32)
            decay = tl.exp(tl.load(G + step).to(tl.float32))
            beta = tl.load(BETA + step).to(tl.float32)
            decayed = tl.load(SCRATCH + (bh * C + j) * DK * DV + cell) * decay
            error = tl.load(V + step * DV + vs).to(tl.float32) - tl.sum(k[:, None] * decayed, 0)
            after = decayed + k[:, None] * (beta * error)[None, :]
            d_state = d_state + q[:, None] * do[None, :]                 # o = S^T (scale q)
            d_error = beta * tl.sum(d_state * k[:, None], 0)
            tl.store(DQ + step * DK + ks, tl.sum(after * do[None, :], 1) * scale)
            tl.store(DK_ + step * DK + ks, tl.sum(d_state * (beta * error)[None, :], 1)
                     - tl.sum(decayed * d_error[None, :], 1))
            tl.store(DV_ + step * DV + vs, d_error)
            tl.store(DBETA + step, tl.sum(tl.sum(k[:, None] * d_state * error[None, :], 1), 0))
            d_decayed = d_state - k[:, None] * d_error[None, :]
            tl.store(DG + step, tl.sum(tl.sum(d_decayed * decayed, 1), 0))
            d_state = d_decayed * decay
    tl.store(DS + bh * DK * DV + cell, d_state)


class ChunkGatedDeltaRule(torch.autograd.Function):
    """`fused_chunk_gated_delta_rule` with its backward in Triton (training on a GPU)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                scale: float, state: torch.Tensor | None, chunk_size: int) -> Pair:
        B, H, T, DK = k.shape
        starts = torch.empty(B * H, triton.cdiv(T, chunk_size), DK, v.shape[-1], dtype=torch.float32,
                             device=q.device)
        o, final = fused_chunk_gated_delta_rule(q, k, v, g, beta, scale, state, chunk_size, starts)
        ctx.save_for_backward(*(x.contiguous() for x in (q, k, v, g, beta)), starts)
        ctx.scale, ctx.chunk, ctx.had_state = scale, chunk_size, state is not None
        return o, final

    @staticmethod
    def backward(ctx, d_out: torch.Tensor, d_final: torch.Tensor | None):
        q, k, v, g, beta, starts = ctx.saved_tensors
        B, H, T, DK = k.shape
        DV, C = v.shape[-1], ctx.chunk
        d_state = (torch.zeros(B, H, DK, DV, dtype=torch.float32, device=q.device) if d_final is None
                   else d_final.float().clone().contiguous())
        grads = [torch.empty(x.shape, dtype=torch.float32, device=q.device) for x in (q, k, v, g, beta)]
        scratch = torch.empty(B * H, C, DK, DV, dtype=torch.float32, device=q.device)
        d_out = torch.zeros_like(grads[2]) if d_out is None else d_out.float().contiguous()
        _backward[(B * H,)](q, k, v, g, beta, starts, d_out, d_state, *grads, scratch, T, ctx.scale,
                            DK=DK, DV=DV, C=C)
        dq, dk, dv, dg, d_beta = (grad.to(x.dtype) for grad, x in zip(grads, (q, k, v, g, beta)))
        return dq, dk, dv, dg, d_beta, None, d_state if ctx.had_state else None, None
