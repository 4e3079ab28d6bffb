"""Pieces shared by the attention kinds: rotary positions and the SwiGLU MLP."""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.attention import attend_few_rows, fused_attention


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the last dim of x [B, H, T, D] by their positions [T]."""
    half = x.shape[-1] // 2
    compiling = torch.compiler.is_compiling()        # a compiled graph folds the constant itself
    freqs = (_frequencies if compiling else rope_frequencies)(half, theta, x.device)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def _frequencies(half: int, theta: float, device: torch.device) -> torch.Tensor:
    return theta ** (-torch.arange(half, device=device, dtype=torch.float32) / half)


@lru_cache(maxsize=16)
def rope_frequencies(half: int, theta: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """RoPE's `half` frequencies, made once (a decode step rotates 4 vectors: building them each time cost more),
    outside inference mode so that any later forward may use them."""
    with torch.inference_mode(False), torch.no_grad():
        return _frequencies(half, theta, device)


SPLIT_MIN = 16384      # keys per thread below which one thread attends a decode step's rows faster


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """q [B, H, T, D] at positions past..past+T-1 against k, v [B, KV, past+T, D]; GQA by head groups."""
    fused = fused_attention(q, k, v, past)
    if fused is not None:
        return fused
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
    oldest first, together past + T positions: a few query rows on CPU through the C kernel (kernels/attention:
    one pass over every segment), the rest through `merged_attention`."""
    few = attend_few_rows(q, segments, past)
    return few if few is not None else merged_attention(q, segments, past)


def merged_attention(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]], past: int) -> torch.Tensor:
    """`attend_segments` in PyTorch. On CPU, long segments go through the fused kernel (split across the threads
    for a few rows), short ones joined, and the results are merged by their log-sum-exps (flash attention's
    merge), so no long segment is copied and a long prefill needs no [T, past + T] mask; elsewhere the segments
    are joined."""
    T = q.shape[2]
    flash = q.device.type == "cpu" and not torch.is_grad_enabled()
    short = past == 0 or (T < 16 and past < 2 * SPLIT_MIN)
    if not flash or (len(segments) == 1 and short):   # where merging pays (BENCHMARKS)
        if len(segments) == 1:
            return causal_attention(q, *segments[0], past)
        return causal_attention(q, torch.cat([k for k, _ in segments], 2), torch.cat([v for _, v in segments], 2), past)
    *older, (k, v) = segments
    cached = k.shape[2] - T                      # the last segment ends with the new positions
    new = (k[:, :, cached:], v[:, :, cached:])
    parts, joined = [], []                       # long segments split across the threads; short ones joined
    for key, value in [*older, (k[:, :, :cached], v[:, :, :cached])]:
        pieces = _pieces(q, key.shape[1], key.shape[2])
        n = key.shape[2] // pieces * pieces
        if pieces > 1:
            parts += _split_keys(q, key[:, :, :n], value[:, :, :n], pieces)
        elif n >= SPLIT_MIN:
            parts.append(_flash(q, key, value, causal=False))
        else:
            n = 0
        joined += [(key[:, :, n:], value[:, :, n:])] if n < key.shape[2] else []
    if T == 1:                                   # one query sees its own key: no causal part
        joined.append(new)
    if joined:
        parts.append(_flash(q, *(torch.cat(x, 2) for x in zip(*joined)), causal=False))
    if T > 1:
        parts.append(_flash(q, *new, causal=True))
    if len(parts) == 1:
        return parts[0][0].to(q.dtype)
    return _merge([o for o, _ in parts], torch.stack([part_lse for _, part_lse in parts])).to(q.dtype)


def _pieces(q: torch.Tensor, kv_heads: int, keys: int) -> int:
    """How many pieces split-K cuts `keys` cached keys into for q (1: not split)."""
    B, H, T, _ = q.shape
    if B == 1 and kv_heads < torch.get_num_threads() and H // kv_heads * T <= 64 and keys >= 2 * SPLIT_MIN:
        return min(torch.get_num_threads(), keys // SPLIT_MIN)
    return 1


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
    KV = k.shape[1]
    groups = H // KV
    if not causal or T == 1:
        o, lse = attend(q.reshape(B, KV, groups * T, D), k, v, 0.0, False)
        return o.reshape(B, H, T, v.shape[-1]), lse.reshape(B, H, T)
    return attend(q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), 0.0, causal)


def _split_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                pieces: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`_flash` (non-causal, batch 1) over keys cut into `pieces` equal pieces batched along dim 0 (split-K): the
    kernel parallelises over batch, heads and query blocks only, so a decode step's few query rows against one
    long latent cache would run on one thread (BENCHMARKS.md, decode step). Each piece's (output, lse)."""
    attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    _, H, T, D = q.shape
    KV, L, Dv = k.shape[1], k.shape[2], v.shape[-1]
    keys, values = (x.reshape(KV, pieces, L // pieces, x.shape[-1]).transpose(0, 1) for x in (k, v))
    o, lse = attend(q.reshape(1, KV, H // KV * T, D).expand(pieces, -1, -1, -1), keys, values, 0.0, False)
    return [(o_i.reshape(1, H, T, Dv), lse_i.reshape(1, H, T)) for o_i, lse_i in zip(o.unbind(0), lse.unbind(0))]


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
