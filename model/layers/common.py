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


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
