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
    if q.device.type == "cpu" and T >= 256 and not torch.is_grad_enabled():   # where it pays (BENCHMARKS.md)
        return _prefill_against_cache(q, k, v, past)
    mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(past)  # query i sees keys <= past + i
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def _prefill_against_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """New queries against the cache, without a [T, past + T] mask: the cached keys unmasked and the new ones
    causally, each through the fused CPU kernel, merged by their log-sum-exps (flash attention's merge)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)   # the kernel has no GQA
    attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    o_past, lse_past = attend(q, k[:, :, :past], v[:, :, :past], 0.0, False)
    o_new, lse_new = attend(q, k[:, :, past:], v[:, :, past:], 0.0, True)
    lse = torch.logaddexp(lse_past, lse_new)
    w_past, w_new = (torch.exp(x - lse).unsqueeze(-1) for x in (lse_past, lse_new))
    return (o_past.float() * w_past + o_new.float() * w_new).to(q.dtype)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
