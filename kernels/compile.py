"""`graph_break`: how a compiled model calls the Triton kernels (as they are, a graph break on GPUs only), and
`on_triton`: whether an op on a tensor takes its Triton kernel."""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

TRITON = os.environ.get("RUSTLE_TRITON", "1") != "0"   # "0": PyTorch's paths on a GPU too (data/gpu/run.sh's fallback)


def on_triton(x: torch.Tensor) -> bool:
    """Whether an op on `x` runs its Triton kernel: a CUDA tensor, unless RUSTLE_TRITON=0 (or TRITON = False)."""
    return x.is_cuda and TRITON


def graph_break(fn: Callable) -> Callable:
    """`torch.compiler.disable(fn)` where a GPU (or Triton's interpreter, in tests) may run fn's Triton kernels;
    elsewhere fn itself, never called: importing the compiler takes ~2 s of every start of the CLI and the server."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return torch.compiler.disable(fn)
    return fn
