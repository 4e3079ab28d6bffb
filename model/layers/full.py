"""`full`: causal softmax attention with GQA; RoPE unless it is a NoPE global layer."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..cache import KVCache
from ..config import ModelConfig
from .common import attend_segments, causal_attention, rope


class FullAttention(nn.Module):
    def __init__(self, config: ModelConfig, use_rope: bool) -> None:
        super().__init__()
        self.h, self.kv, self.d = config.n_heads, config.n_kv_heads, config.head_dim
        self.use_rope, self.theta = use_rope, config.rope_theta
        self.qkv = nn.Linear(config.d_model, (self.h + 2 * self.kv) * self.d, bias=config.qkv_bias)
        self.out = nn.Linear(self.h * self.d, config.d_model, bias=False)

    def project(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q [B, H, T, D], k and v [B, KV, T, D]."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, -1, self.d).transpose(1, 2).split([self.h, self.kv, self.kv], dim=1)
        if self.use_rope:
            q, k = rope(q, positions, self.theta), rope(k, positions, self.theta)
        return q, k, v

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        return KVCache(batch, self.kv, self.d, dtype, device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x, positions)
        if cache is None:
            o = causal_attention(q, k, v, 0)
        else:
            past = cache.length
            o = attend_segments(q, cache.append(k, v), past)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))
