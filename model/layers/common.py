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
    if not flash or (len(segments) == 1 and (past == 0 or T < 16)):   # where merging pays (BENCHMARKS)
        if len(segments) == 1:
            return causal_attention(q, *segments[0], past)
        return causal_attention(q, torch.cat([k for k, _ in segments], 2), torch.cat([v for _, v in segments], 2), past)
    *older, (k, v) = segments
    cached = k.shape[2] - T                      # the last segment ends with the new positions
    parts = [_flash(q, *older_kv, causal=False) for older_kv in older]
    if cached:
        parts.append(_flash(q, k[:, :, :cached], v[:, :, :cached], causal=False))
    parts.append(_flash(q, k[:, :, cached:], v[:, :, cached:], causal=True))
    lse = torch.logsumexp(torch.stack([part_lse for _, part_lse in parts]), dim=0)
    out = sum(o.float() * torch.exp(part_lse - lse).unsqueeze(-1) for o, part_lse in parts)
    return out.to(q.dtype)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused CPU kernel's output and log-sum-exp [B, H, T]. Without a causal mask a group's query heads become
    query rows of their kv head, so a long cached segment is never copied per head; the causal part (the new
    positions only) repeats its kv heads (the kernel has no GQA)."""
    attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    B, H, T, D = q.shape
    groups = H // k.shape[1]
    if not causal or T == 1:
        o, lse = attend(q.reshape(B, k.shape[1], groups * T, D), k, v, 0.0, False)
        return o.reshape(B, H, T, v.shape[-1]), lse.reshape(B, H, T)
    return attend(q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), 0.0, causal)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
