"""`swa`: sliding-window attention (each position sees itself and the W-1 before it), with RoPE.

The parallel form walks the sequence in blocks of W queries, each against at most 2W keys, so memory
stays O(T W) at any context length; the cache is a ring buffer of W positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.attention import attend_few_rows, fused_attention

from ..cache import RingCache
from ..config import ModelConfig
from .common import causal_attention
from .full import FullAttention


class SlidingWindowAttention(FullAttention):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, use_rope=True)
        self.window = config.window

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> RingCache:
        return RingCache(batch, self.kv, self.d, self.window, dtype, device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: RingCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x, positions)
        past = 0
        if cache is not None and T == 1:   # decode: the ring after the append is exactly the window, any order
            cache.append(k, v)
            n = min(cache.seen, self.window)
            ring = [(cache.k[:, :, :n], cache.v[:, :, :n])]
            o = attend_few_rows(q, ring, n - 1)          # the query sees all n: the C kernel on CPU
            o = causal_attention(q, *ring[0], 0) if o is None else o
            return self.out(o.transpose(1, 2).reshape(B, T, -1))
        if cache is not None:
            past_k, past_v = cache.recent()
            past = past_k.shape[2]
            cache.append(k, v)
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        fused = fused_attention(q, k, v, past, self.window)
        if fused is not None:
            return self.out(fused.transpose(1, 2).reshape(B, T, -1))
        W, outs = self.window, []
        for start in range(0, T, W):  # queries [start, end) see keys (i - W, i] in the concatenated sequence
            end = min(start + W, T)
            lo = max(0, past + start - W + 1)
            qi = torch.arange(past + start, past + end, device=x.device)[:, None]
            kj = torch.arange(lo, past + end, device=x.device)[None, :]
            mask = (kj <= qi) & (kj > qi - W)
            outs.append(F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, lo:past + end],
                                                       v[:, :, lo:past + end], attn_mask=mask, enable_gqa=True))
        o = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        return self.out(o.transpose(1, 2).reshape(B, T, -1))
