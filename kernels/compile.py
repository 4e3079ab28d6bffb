"""`graph_break`: how a compiled model calls the Triton kernels (as they are, a graph break on GPUs only)."""
from __future__ import annotations

import os
from collections.abc import Callable

import torch


def graph_break(fn: Callable) -> Callable:
    """`torch.compiler.disable(fn)` where a GPU (or Triton's interpreter, in tests) may run fn's Triton kernels;
    elsewhere fn itself, never called: importing the compiler takes ~2 s of every start of the CLI and the server."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return torch.compiler.disable(fn)
    return fn
