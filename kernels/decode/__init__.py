"""A few tokens (a decode step, a draft, a typed line) through the whole hybrid model in C on CPU (step.c): fp32
activations, fp16 weights, batch 1. The model describes itself (`ModelSpec`, one `LayerSpec` a block) and keeps
its caches' bookkeeping (model/serving.py); its PyTorch forward is the reference."""
from __future__ import annotations

from .cpu import KINDS, LayerSpec, ModelSpec, available, forward_rows, point_at_latents, pointers

__all__ = ["KINDS", "LayerSpec", "ModelSpec", "available", "forward_rows", "point_at_latents", "pointers"]
