"""Attention kernels, each beside the naive reference (naive.py), and the dispatch that picks one by device:
- `fused_attention`: causal attention (GQA, optional sliding window), forward and backward, in Triton
  (flash.py) for CUDA tensors;
- `attend_few_rows`: a few query rows (a decode step, a draft, a typed line) against a cache held in segments
  (model/cache.py), a C kernel for CPU tensors (segments.c, built on first use by cpu.py);
- `selected_attention` (select.py): each query against its recent keys and the blocks of older keys selected
  for it, for a long latent cache; the C kernel on CPU, gathers in PyTorch elsewhere.
The first two return None where they do not apply, and the model keeps its PyTorch path; the third picks its
path itself. The model never branches on the device."""
from __future__ import annotations

import torch

from ..compile import graph_break, on_triton
from .cpu import available, segment_attention
from .naive import naive_segment_attention, naive_selected_attention
from .select import selected_attention

ROWS = 64   # query rows per kv head up to which one pass over the keys beats the fused kernel's blocks (BENCHMARKS)

__all__ = ["ROWS", "attend_few_rows", "available", "fused_attention", "naive_segment_attention",
           "naive_selected_attention", "segment_attention", "selected_attention"]


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int,
                    window: int = 0) -> torch.Tensor | None:
    """Causal attention of q [B, H, T, D] at positions past..past+T-1 against k, v [B, KV, past+T, D] with the
    Triton kernel, where it applies: CUDA tensors (`on_triton`), one power-of-2 width (autograd included)."""
    D = q.shape[-1]
    if not on_triton(q) or k.shape[2] != past + q.shape[2] or v.shape[-1] != D or D & (D - 1):
        return None
    return _flash(q, k, v, past, window)


@graph_break
def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, window: int) -> torch.Tensor:
    from .flash import FlashAttention     # Triton is imported only where a GPU runs it
    return FlashAttention.apply(q, k, v, past, window)


def attend_few_rows(q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]],
                    past: int) -> torch.Tensor | None:
    """Causal attention of q [1, H, T, D] against the segments with the CPU kernel, where it applies: fp32 CPU
    tensors, no gradient, batch 1, at most ROWS rows per kv head, keys and values of one width."""
    k = segments[0][0]
    if (q.device.type != "cpu" or torch.is_grad_enabled() or q.dtype != torch.float32 or k.dtype != torch.float32
            or q.shape[0] != 1 or q.shape[1] // k.shape[1] * q.shape[2] > ROWS
            or segments[0][1].shape[-1] != q.shape[-1] or not available()):
        return None
    return segment_attention(q, segments, past)[0]
