"""One decode step of the gated delta rule, updating the fp32 state in place (PyTorch on CPU, Triton on CUDA)."""
from __future__ import annotations

import torch

from ..compile import on_triton


def recurrent_gated_delta_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                               beta: torch.Tensor, scale: float, state: torch.Tensor) -> torch.Tensor:
    """q, k [B, H, K]; v [B, H, V]; g, beta [B, H]; state [B, H, K, V] (fp32, updated). Returns o [B, H, V] fp32.
    On CUDA tensors, the Triton kernel (fused_recurrent.py)."""
    if on_triton(q) and state.is_contiguous():
        from .fused_recurrent import fused_recurrent_gated_delta_rule   # Triton only where a GPU runs it
        return fused_recurrent_gated_delta_rule(*(x.unsqueeze(2) for x in (q, k, v, g, beta)), scale, state)[:, :, 0]
    q, k, v = q.float(), k.float(), v.float()
    state.mul_(g.float().exp()[..., None, None])
    error = v - torch.einsum("bhk,bhkv->bhv", k, state)
    state.add_(k[..., :, None] * (beta.float()[..., None] * error)[..., None, :])
    return torch.einsum("bhk,bhkv->bhv", q * scale, state)
