"""Attention of a few query rows (a decode step, a draft, a typed line) against a cache held in segments
(model/cache.py): a C kernel on CPU (segments.c, built on first use by cpu.py), the naive reference beside it.
`attend_few_rows` is the dispatch: the kernel's output where it applies, else None (the caller's PyTorch path)."""
from __future__ import annotations

import torch

from .cpu import available, segment_attention
from .naive import naive_segment_attention

ROWS = 64   # query rows per kv head up to which one pass over the keys beats the fused kernel's blocks (BENCHMARKS)

__all__ = ["ROWS", "attend_few_rows", "available", "naive_segment_attention", "segment_attention"]


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
