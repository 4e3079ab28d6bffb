"""`lql`: the linear–quadratic–linear sandwich. Project D → d, attend causally in the latent space, project
d → D.

Keys and values are the latent z itself (their projections are folded into the query and output
projections, as in MLA's weight absorption), so the cache holds only d numbers per token. With `lql_shift` they are
[z_t, z_t-1]: the position after a match carries the match in its key, as an induction head needs. With
`lql_token_key` they are [z_t, e_t-1, e_t], e a projection of the token's own embedding: the previous token itself,
not a latent that mixes it with its context, and the token to copy. Past
`recent + 64 * blocks` keys a query attends to its recent keys and the blocks of older ones selected for it
(kernels/attention/select.py), so a long repository costs each query the same as a training window.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.attention import selected_attention
from kernels.attention.select import BLOCK

from ..cache import LatentCache
from ..config import ModelConfig
from .common import attend_segments, rope


def log_scale(positions: torch.Tensor, base: int) -> torch.Tensor:
    """max(1, ln(p + 1) / ln(base)) for each position p [T]: past `base` keys a query grows with the log of their
    number, so that the softmax does not flatten over a context longer than training's (scalable softmax)."""
    return (torch.log1p(positions.to(torch.float32)) / math.log(base)).clamp_min(1.0)


class LatentAttention(nn.Module):
    def __init__(self, config: ModelConfig, use_rope: bool) -> None:
        super().__init__()
        self.d, self.h = config.lql_dim, config.lql_heads
        self.use_rope, self.theta = use_rope, config.rope_theta
        self.recent, self.blocks, self.log_base = config.lql_recent, config.lql_blocks, config.lql_log_base
        self.shift, self.token_key = config.lql_shift, config.lql_token_key
        self.width = width = config.lql_width                                  # of a key (and value)
        self.down = nn.Linear(config.d_model, self.d, bias=False)              # D -> d: the latent
        self.query = nn.Linear(config.d_model, self.h * width, bias=False)     # one query per head
        self.up = nn.Linear(self.h * width, config.d_model, bias=False)        # -> D
        if self.token_key:
            self.token_down = nn.Linear(config.d_model, self.d, bias=False)    # a token's embedding -> e

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> LatentCache:
        return LatentCache(batch, self.width, dtype, device)

    def previous(self, x: torch.Tensor, cache: LatentCache | None, at: int) -> torch.Tensor:
        """x [B, T, d] one position later: the first row is the cache's last position's d numbers from `at` (zeros
        at position 0)."""
        first = torch.zeros_like(x[:, :1])
        if cache is not None and cache.length:
            first = cache.segments()[-1][0][:, -1:, at:at + self.d].to(x.dtype)
        return torch.cat([first, x[:, :-1]], 1)

    def latent(self, x: torch.Tensor, embeds: torch.Tensor | None, cache: LatentCache | None) -> torch.Tensor:
        """Each new position's key and value, as the cache holds it: z, [z_t, z_t-1] or [z_t, e_t-1, e_t]."""
        z = self.down(x)
        if self.token_key:
            e = self.token_down(F.rms_norm(embeds, (embeds.shape[-1],))).to(z.dtype)
            return torch.cat([z, self.previous(e, cache, 2 * self.d), e], -1)
        return torch.cat([z, self.previous(z, cache, 0)], -1) if self.shift else z

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: LatentCache | None = None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        z = self.latent(x, embeds, cache)
        q = self.query(x).view(B, T, self.h, z.shape[-1]).transpose(1, 2)      # [B, h, T, width]
        past = cache.length if cache is not None else 0
        latents = cache.append(z) if cache is not None else [z]               # by segment (model/cache.py)
        if self.use_rope:
            q = rope(q, positions, self.theta)
        if self.log_base:
            q = q * log_scale(positions, self.log_base).to(q.dtype)[:, None]
        segments, start = [], 0
        for z in latents:
            v = z[:, None]                                                     # [B, 1, L, width], shared by the heads
            k = rope(v, torch.arange(start, start + v.shape[2], device=x.device), self.theta) if self.use_rope else v
            segments.append((k, v))
            start += v.shape[2]
        if self.blocks and past + T > self.recent + self.blocks * BLOCK:
            kept = cache.bounds if cache is not None and not self.use_rope else None   # the latents' own bounds
            attend = selected_attention
            if torch.compiler.is_compiling():    # which blocks a query sees is data-dependent: kept out of the graph
                attend = torch.compiler.disable(selected_attention)
            o = attend(q, segments, past, self.recent, self.blocks, kept)
        else:
            o = attend_segments(q, segments, past)
        return self.up(o.transpose(1, 2).reshape(B, T, -1))
