"""A linear layer for a few rows against a weight held in fp16, in C on CPU (gemv.c, built by kernels/clib.py):
`few_rows_linear`, None where it does not apply (the caller keeps F.linear). Its reference is F.linear on the
weight in fp32."""
from __future__ import annotations

from .cpu import MAX_ROWS, few_rows_linear

__all__ = ["MAX_ROWS", "few_rows_linear"]
