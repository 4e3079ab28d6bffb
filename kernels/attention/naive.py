"""The reference for segments.c and flash.py: the segments joined, causal (and window) scores masked, softmax
in fp32."""
from __future__ import annotations

import torch


def naive_segment_attention(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]],
                            past: int, window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, H, T, D] at positions past..past+T-1 against k, v [B, KV, L_i, D] held in segments (together
    past + T positions), GQA by head groups: (o [B, H, T, D], lse [B, H, T]). `window` > 0: each position
    sees itself and the window - 1 before it."""
    k = torch.cat([k for k, _ in segments], 2).float()
    v = torch.cat([v for _, v in segments], 2).float()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    T, L = q.shape[2], k.shape[2]
    scores = q.float() @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    keys, positions = torch.arange(L, device=q.device)[None, :], torch.arange(past, past + T, device=q.device)[:, None]
    visible = (keys <= positions) & ((keys > positions - window) if window > 0 else True)
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    return torch.exp(scores - lse[..., None]) @ v, lse
