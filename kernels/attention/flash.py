"""Flash-style causal attention in Triton (GPU), forward and backward: queries at positions past..past+T-1
against keys 0..past+T-1, GQA by head groups, an optional sliding window (each position sees itself and the
W-1 before it). Forward: one program per (block of queries, batch x head, split of the keys); keys in blocks
with an online softmax, fp32 accumulation, log-sum-exp out; a decode step's keys are split across programs
and merged (flash-decoding). Backward: dK, dV per block of keys, dQ per block of queries, from the saved
log-sum-exps. Runs on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1 (tests). The reference is
naive.py's `naive_segment_attention` (one segment)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """PRECISION "ieee" for fp32 inputs (a GPU's default for them is TF32, 10-bit mantissas), else the default."""
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _rows(X, base, index, stride, dims, count):
    """Rows `index` of one head's [count, D] matrix at X + base; rows past `count` read as 0."""
    return tl.load(X + base + index[:, None] * stride + dims[None, :], mask=index[:, None] < count, other=0.0)


@triton.jit
def _queries(Q, DO, LSE, DELTA, base, bh, rows, stride, dims, T, scale, dtype: tl.constexpr):
    """A block of query rows for a backward pass: q (scaled, as the forward used it), dO, lse, delta."""
    q = (_rows(Q, base, rows, stride, dims, T).to(tl.float32) * scale).to(dtype)
    do = _rows(DO, base, rows, stride, dims, T)
    lse = tl.load(LSE + bh * T + rows, mask=rows < T, other=0.0)
    delta = tl.load(DELTA + bh * T + rows, mask=rows < T, other=0.0)
    return q, do, lse, delta


@triton.jit
def _forward(Q, K, V, O, LSE, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sos, sob, soh, sot,
             H, T, L, past, groups, scale, span, WINDOW: tl.constexpr, PRECISION: tl.constexpr,
             D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One block of queries against the keys of one split (`span` keys from split * span; a multiple of BLOCK_N):
    its output and log-sum-exp at O + split * sos and LSE + split * B * H * T."""
    block, bh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    kv = h // groups
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)          # query index in [0, T)
    dims = tl.arange(0, D)
    q = (_rows(Q, b * sqb + h * sqh, rows, sqt, dims, T).to(tl.float32) * scale).to(K.dtype.element_ty)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    lo = 0
    if WINDOW > 0:
        lo = tl.maximum(past + block * BLOCK_M - WINDOW + 1, 0) // BLOCK_N * BLOCK_N
    hi = tl.minimum(past + (block + 1) * BLOCK_M, L)
    lo, hi = tl.maximum(lo, split * span), tl.minimum(hi, (split + 1) * span)
    for start in range(lo, hi, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        k = _rows(K, b * skb + kv * skh, keys, skt, dims, L)
        v = _rows(V, b * svb + kv * svh, keys, svt, dims, L)
        s = tl.where(_mask(rows, keys, T, L, past, WINDOW), _dot(q, tl.trans(k), PRECISION), float("-inf"))
        top = tl.maximum(m, tl.max(s, 1))
        safe = tl.where(top == float("-inf"), 0.0, top)      # a row with no visible key yet: weights 0
        p = tl.exp(s - safe[:, None])
        alpha = tl.exp(m - safe)
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION)
        m = top
    l = tl.where(l == 0.0, 1.0, l)             # padding rows past T, or no visible key in this split: weight 0
    out = acc / l[:, None]
    tl.store(O + split * sos + b * sob + h * soh + rows[:, None] * sot + dims[None, :],
             out.to(O.dtype.element_ty),
             mask=rows[:, None] < T)
    tl.store(LSE + split * tl.num_programs(1) * T + bh * T + rows, m + tl.log(l), mask=rows < T)


@triton.jit
def _mask(rows, keys, T, L, past, WINDOW: tl.constexpr):
    """Which (query row, key) pairs are attended: causal, inside the cache and the window, a real row."""
    positions = past + rows
    visible = (keys[None, :] <= positions[:, None]) & (keys[None, :] < L) & (rows[:, None] < T)
    if WINDOW > 0:
        visible = visible & (keys[None, :] > positions[:, None] - WINDOW)
    return visible


@triton.jit
def _backward_kv(Q, K, V, DO, LSE, DELTA, DK, DV, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                 H, T, L, past, groups, scale, WINDOW: tl.constexpr, PRECISION: tl.constexpr,
                 D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dK, dV of one block of keys for one query head (the caller sums a group's heads)."""
    block, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    kv = h // groups
    keys = block * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, D)
    k = _rows(K, b * skb + kv * skh, keys, skt, dims, L)
    v = _rows(V, b * svb + kv * svh, keys, svt, dims, L)
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    lo = tl.maximum(block * BLOCK_N - past, 0) // BLOCK_M * BLOCK_M       # the first query that sees a key
    hi = T
    if WINDOW > 0:
        hi = tl.minimum(T, block * BLOCK_N + BLOCK_N - 1 + WINDOW - past)
    for start in range(lo, hi, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        q, do, lse, delta = _queries(Q, DO, LSE, DELTA, b * sqb + h * sqh, bh, rows, sqt, dims, T, scale,
                                     K.dtype.element_ty)
        s = _dot(q, tl.trans(k), PRECISION)
        p = tl.where(_mask(rows, keys, T, L, past, WINDOW), tl.exp(s - lse[:, None]), 0.0)
        dv += _dot(tl.trans(p.to(do.dtype)), do, PRECISION)
        ds = p * (_dot(do, tl.trans(v), PRECISION) - delta[:, None])
        dk += _dot(tl.trans(ds.to(q.dtype)), q, PRECISION)
    out = b * sdb + h * sdh + keys[:, None] * sdt + dims[None, :]
    tl.store(DK + out, dk, mask=keys[:, None] < L)
    tl.store(DV + out, dv, mask=keys[:, None] < L)


@triton.jit
def _backward_q(Q, K, V, DO, LSE, DELTA, DQ, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                H, T, L, past, groups, scale, WINDOW: tl.constexpr, PRECISION: tl.constexpr,
                D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dQ of one block of queries: the forward's key loop again, with the saved log-sum-exps."""
    block, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    kv = h // groups
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, D)
    q, do, lse, delta = _queries(Q, DO, LSE, DELTA, b * sqb + h * sqh, bh, rows, sqt, dims, T, scale,
                                 K.dtype.element_ty)
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    lo = 0
    if WINDOW > 0:
        lo = tl.maximum(past + block * BLOCK_M - WINDOW + 1, 0) // BLOCK_N * BLOCK_N
    hi = tl.minimum(past + (block + 1) * BLOCK_M, L)
    for start in range(lo, hi, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        k = _rows(K, b * skb + kv * skh, keys, skt, dims, L)
        v = _rows(V, b * svb + kv * svh, keys, svt, dims, L)
        s = _dot(q, tl.trans(k), PRECISION)
        p = tl.where(_mask(rows, keys, T, L, past, WINDOW), tl.exp(s - lse[:, None]), 0.0)
        ds = p * (_dot(do, tl.trans(v), PRECISION) - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PRECISION)
    tl.store(DQ + b * sqb + h * sqh + rows[:, None] * sqt + dims[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=rows[:, None] < T)


SPLIT_KEYS = 2048     # keys per program at least, when a decode step's keys are split
MAX_SPLITS = 64


def _precision(q: torch.Tensor) -> str:
    return "ieee" if q.dtype == torch.float32 else "tf32"


def _blocks(T: int) -> tuple[int, int]:
    return (16, 16) if T <= 16 else (64, 64)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int,
                    window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, H, T, D] at positions past..past+T-1 against k, v [B, KV, past+T, D] (last dim contiguous):
    (o [B, H, T, D] in q's dtype, lse [B, H, T] fp32). `window` > 0: each position sees the last W positions."""
    B, H, T, D = q.shape
    L = k.shape[2]
    assert L == past + T and v.shape[-1] == D and D & (D - 1) == 0, "keys past + T long, one power-of-2 width"
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
    block_m, block_n = _blocks(T)
    splits, span = 1, triton.cdiv(L, block_n) * block_n
    if T <= block_m and L > 2 * SPLIT_KEYS:   # a decode step: the keys split across programs (flash-decoding)
        span = triton.cdiv(max(SPLIT_KEYS, triton.cdiv(L, MAX_SPLITS)), block_n) * block_n
        splits = triton.cdiv(L, span)
    o = torch.empty(splits, B, H, T, D, dtype=q.dtype if splits == 1 else torch.float32, device=q.device)
    lse = torch.empty(splits, B, H, T, dtype=torch.float32, device=q.device)
    _forward[(triton.cdiv(T, block_m), B * H, splits)](
        q, k, v, o, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:4], H, T, L, past,
        H // k.shape[1], D ** -0.5, span, WINDOW=window, PRECISION=_precision(q), D=D, BLOCK_M=block_m,
        BLOCK_N=block_n)
    if splits == 1:
        return o[0], lse[0]
    total = torch.logsumexp(lse, 0)
    return (o * torch.exp(lse - total)[..., None]).sum(0).to(q.dtype), total


class FlashAttention(torch.autograd.Function):
    """`flash_attention` with its backward (Triton too): dK and dV per query head, summed over each group."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, window: int) -> torch.Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = flash_attention(q, k, v, past, window)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.past, ctx.window = past, window
        return o

    @staticmethod
    def backward(ctx, do: torch.Tensor):
        q, k, v, o, lse = ctx.saved_tensors
        do = do.contiguous()
        B, H, T, D = q.shape
        KV, L = k.shape[1], k.shape[2]
        delta = (do.float() * o.float()).sum(-1)
        dq = torch.empty_like(q)
        dk = torch.empty(B, H, L, D, dtype=torch.float32, device=q.device)
        dv = torch.empty_like(dk)
        block_m, block_n = _blocks(T)
        common = (H, T, L, ctx.past, H // KV, D ** -0.5)
        sizes = dict(WINDOW=ctx.window, PRECISION=_precision(q), D=D, BLOCK_M=block_m, BLOCK_N=block_n)
        strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
        _backward_kv[(triton.cdiv(L, block_n), B * H)](q, k, v, do, lse, delta, dk, dv, *strides, *dk.stride()[:3],
                                                      *common, **sizes)
        _backward_q[(triton.cdiv(T, block_m), B * H)](q, k, v, do, lse, delta, dq, *strides, *common, **sizes)
        group = lambda x: x.view(B, KV, H // KV, L, D).sum(2).to(k.dtype)  # noqa: E731
        return dq, group(dk), group(dv), None, None
