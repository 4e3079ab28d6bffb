"""Pieces shared by the attention kinds: rotary positions and the SwiGLU MLP."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the last dim of x [B, H, T, D] by their positions [T]."""
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


SPLIT_MIN = 16384      # keys per thread below which one thread attends a decode step's rows faster


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """q [B, H, T, D] at positions past..past+T-1 against k, v [B, KV, past+T, D]; GQA by head groups."""
    T = q.shape[2]
    if past == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True)
    if T == 1:  # decode: a group's query heads become query rows of its kv head, so no kv copy per head
        B, H, _, D = q.shape
        o = F.scaled_dot_product_attention(q.reshape(B, k.shape[1], H // k.shape[1], D), k, v)
        return o.reshape(B, H, 1, v.shape[-1])
    mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(past)  # query i sees keys <= past + i
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def attend_segments(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]], past: int) -> torch.Tensor:
    """`causal_attention` against a cache held in segments (model/cache.py: branches share their prefix),
    oldest first, together past + T positions. On CPU, each segment goes through the fused kernel and the
    results are merged by their log-sum-exps (flash attention's merge), so no segment is copied and a long
    prefill needs no [T, past + T] mask; elsewhere the segments are joined."""
    T = q.shape[2]
    flash = q.device.type == "cpu" and not torch.is_grad_enabled()
    short = past == 0 or (T < 16 and past < 2 * SPLIT_MIN)
    if not flash or (len(segments) == 1 and short):   # where merging pays (BENCHMARKS)
        if len(segments) == 1:
            return causal_attention(q, *segments[0], past)
        return causal_attention(q, torch.cat([k for k, _ in segments], 2), torch.cat([v for _, v in segments], 2), past)
    *older, (k, v) = segments
    cached = k.shape[2] - T                      # the last segment ends with the new positions
    parts = [_flash(q, *older_kv, causal=False) for older_kv in older]
    if cached:
        parts.append(_flash(q, k[:, :, :cached], v[:, :, :cached], causal=False))
    parts.append(_flash(q, k[:, :, cached:], v[:, :, cached:], causal=True))
    return _merge([o for o, _ in parts], torch.stack([part_lse for _, part_lse in parts])).to(q.dtype)


def _merge(outs: list[torch.Tensor], lses: torch.Tensor) -> torch.Tensor:
    """Attention outputs over disjoint key sets, stacked along dim 0 with their log-sum-exps, as one (fp32)."""
    lse = torch.logsumexp(lses, dim=0)
    return sum(o.float() * torch.exp(part_lse - lse).unsqueeze(-1) for o, part_lse in zip(outs, lses))


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused CPU kernel's output and log-sum-exp [B, H, T]. Without a causal mask a group's query heads become
    query rows of their kv head, so a long cached segment is never copied per head; the causal part (the new
    positions only) repeats its kv heads (the kernel has no GQA)."""
    attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    B, H, T, D = q.shape
    KV, L = k.shape[1], k.shape[2]
    groups = H // KV
    if not causal or T == 1:
        if B == 1 and KV < torch.get_num_threads() and groups * T <= 64 and L >= 2 * SPLIT_MIN:
            return _split_keys(q, k, v, min(torch.get_num_threads(), L // SPLIT_MIN))
        o, lse = attend(q.reshape(B, KV, groups * T, D), k, v, 0.0, False)
        return o.reshape(B, H, T, v.shape[-1]), lse.reshape(B, H, T)
    return attend(q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), 0.0, causal)


def _split_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pieces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_flash` (non-causal, batch 1) with the keys cut into `pieces` pieces batched along dim 0, then merged
    (split-K): the kernel parallelises over batch, heads and query blocks only, so a decode step's few query
    rows against one long latent cache would run on one thread (BENCHMARKS.md, decode step)."""
    attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    _, H, T, D = q.shape
    KV, L, Dv = k.shape[1], k.shape[2], v.shape[-1]
    n = L // pieces * pieces
    keys, values = (x[:, :, :n].reshape(KV, pieces, n // pieces, x.shape[-1]).transpose(0, 1) for x in (k, v))
    o, lse = attend(q.reshape(1, KV, H // KV * T, D).expand(pieces, -1, -1, -1), keys, values, 0.0, False)
    outs, lses = list(o.unbind(0)), list(lse.unbind(0))                  # [KV, rows, Dv] and [KV, rows] each
    if n < L:
        o_rest, lse_rest = _flash(q, k[:, :, n:], v[:, :, n:], causal=False)
        outs.append(o_rest.reshape(KV, -1, Dv))
        lses.append(lse_rest.reshape(KV, -1))
    lses = torch.stack(lses)
    return _merge(outs, lses).to(q.dtype).reshape(1, H, T, Dv), torch.logsumexp(lses, 0).reshape(1, H, T)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
