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


def naive_selected_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, recent: int,
                             blocks: int, size: int = 64) -> torch.Tensor:
    """The reference for select.py, one query row at a time: q [B, H, T, D] at positions past..past+T-1 against
    k, v [B, 1, past+T, D]. The query at p sees keys from max(0, p + 1 - recent) rounded down to a multiple of
    `size` up to p, and the `blocks` whole blocks of `size` keys before those with the highest
    sum_d max(q_d * min_d, q_d * max_d) over the block's keys."""
    B, H, T, D = q.shape
    out = torch.empty(B, H, T, v.shape[-1])
    for b in range(B):
        for h in range(H):
            for t in range(T):
                p = past + t
                local = max(0, p + 1 - recent) // size * size
                seen = torch.zeros(p + 1, dtype=torch.bool)
                seen[local:] = True
                row = q[b, h, t].float()
                bounds = [(torch.maximum(row * k[b, 0, i:i + size].float().amin(0),
                                         row * k[b, 0, i:i + size].float().amax(0)).sum(), i)
                          for i in range(0, local, size)]
                for _, i in sorted(bounds, key=lambda x: -x[0])[:blocks]:
                    seen[i:i + size] = True
                scores = (k[b, 0, :p + 1].float() @ row) * D ** -0.5
                weight = scores.masked_fill(~seen, float("-inf")).softmax(-1)
                out[b, h, t] = weight @ v[b, 0, :p + 1].float()
    return out
