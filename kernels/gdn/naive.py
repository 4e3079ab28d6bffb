"""The token-by-token recurrence, written for clarity: the reference the other forms are tested against."""
from __future__ import annotations

import torch


def naive_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                           scale: float, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (o [B, H, T, V], final state [B, H, K, V]); computes in fp32."""
    B, H, T, K = k.shape
    V = v.shape[-1]
    q, k, v, g, beta = (x.float() for x in (q, k, v, g, beta))
    S = torch.zeros(B, H, K, V, dtype=torch.float32, device=q.device) if state is None else state.float().clone()
    out = torch.empty(B, H, T, V, dtype=torch.float32, device=q.device)
    for t in range(T):
        S = S * g[:, :, t, None, None].exp()
        error = v[:, :, t] - torch.einsum("bhk,bhkv->bhv", k[:, :, t], S)
        S = S + torch.einsum("bhk,bhv->bhkv", k[:, :, t], beta[:, :, t, None] * error)
        out[:, :, t] = torch.einsum("bhk,bhkv->bhv", q[:, :, t] * scale, S)
    return out, S
