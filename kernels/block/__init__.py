"""A block's dense parts for a few fp32 rows in C on CPU (dense.c): `rms_norm_rows` (nn.RMSNorm) and
`residual_mlp` (the residual add, RMSNorm and SwiGLU MLP with fp16 weights), each None where it does not apply
(the caller keeps PyTorch's). Their reference is model/model.py's Block."""
from __future__ import annotations

from .cpu import residual_mlp, rms_norm_rows

__all__ = ["residual_mlp", "rms_norm_rows"]
