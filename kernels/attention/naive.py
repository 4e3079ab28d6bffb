"""The reference for segments.c: the segments joined, causal scores masked, softmax in fp32."""
from __future__ import annotations

import torch


def naive_segment_attention(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]],
                            past: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, H, T, D] at positions past..past+T-1 against k, v [B, KV, L_i, D] held in segments (together
    past + T positions), GQA by head groups: (o [B, H, T, D], lse [B, H, T])."""
    k = torch.cat([k for k, _ in segments], 2).float()
    v = torch.cat([v for _, v in segments], 2).float()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    T, L = q.shape[2], k.shape[2]
    scores = q.float() @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    visible = torch.arange(L)[None, :] <= torch.arange(past, past + T)[:, None]
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    return torch.exp(scores - lse[..., None]) @ v, lse
