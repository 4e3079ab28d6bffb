"""`lql`: the linear–quadratic–linear sandwich. Project D → d, attend causally in the latent space, project d → D.

Keys and values are the latent z itself (their projections are folded into the query and output
projections, as in MLA's weight absorption), so the cache holds only d numbers per token. With `lql_shift` they are
[z_t, z_t-1]: the position after a match carries the match in its key, as an induction head needs. With
`lql_token_key` the cache holds [z_t, e_t] instead, e_t a projection of token t's embedding: a key is [z_t, e_t-1] (the
previous token itself, not a latent that mixes it with its context) and a value [z_t, e_t] (the token to copy). Past
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
        width = 2 * self.d if self.shift else self.d                           # of a key (and value)
        self.down = nn.Linear(config.d_model, self.d, bias=False)              # D -> d: the latent
        self.query = nn.Linear(config.d_model, self.h * width, bias=False)     # one query per head
        self.up = nn.Linear(self.h * width, config.d_model, bias=False)        # -> D
        if self.token_key:
            self.token_down = nn.Linear(config.d_model, self.d, bias=False)    # a token's embedding -> e

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> LatentCache:
        return LatentCache(batch, 2 * self.d if self.shift else self.d, dtype, device)

    def shifted(self, z: torch.Tensor, cache: LatentCache | None) -> torch.Tensor:
        """[z_t, z_t-1] for each new position (zeros before the first)."""
        first = torch.zeros_like(z[:, :1])
        if cache is not None and cache.length:
            first = cache.segments()[-1][0][:, -1:, :self.d].to(z.dtype)
        return torch.cat([z, torch.cat([first, z[:, :-1]], 1)], -1)

    def latent(self, x: torch.Tensor, embeds: torch.Tensor | None, cache: LatentCache | None) -> torch.Tensor:
        """What the cache holds of each new position: z, [z_t, z_t-1] or (token keys) [z_t, e_t]."""
        z = self.down(x)
        if self.token_key:
            e = self.token_down(F.rms_norm(embeds, (embeds.shape[-1],)))
            return torch.cat([z, e.to(z.dtype)], -1)
        return self.shifted(z, cache) if self.shift else z

    def token_keys(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each segment's keys [z_t, e_t-1] from the held [z_t, e_t] (zeros before the first position)."""
        keys, last = [], None
        for z in latents:
            e = z[..., self.d:]
            first = torch.zeros_like(e[:, :1]) if last is None else last.to(e.dtype)
            keys.append(torch.cat([z[..., :self.d], torch.cat([first, e[:, :-1]], 1)], -1))
            last = e[:, -1:] if e.shape[1] else last
        return keys

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
        for z, k in zip(latents, self.token_keys(latents) if self.token_key else latents):
            v, k = z[:, None], k[:, None]                                      # [B, 1, L, width], shared by the heads
            k = rope(k, torch.arange(start, start + k.shape[2], device=x.device), self.theta) if self.use_rope else k
            segments.append((k, v))
            start += v.shape[2]
        if self.blocks and past + T > self.recent + self.blocks * BLOCK:
            own = cache is not None and not self.use_rope and not self.token_key
            kept = cache.bounds if own else None                               # the latents' own bounds
            attend = selected_attention
            if torch.compiler.is_compiling():    # which blocks a query sees is data-dependent: kept out of the graph
                attend = torch.compiler.disable(selected_attention)
            o = attend(q, segments, past, self.recent, self.blocks, kept)
        else:
            o = attend_segments(q, segments, past)
        return self.up(o.transpose(1, 2).reshape(B, T, -1))
