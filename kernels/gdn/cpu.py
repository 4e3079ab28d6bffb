"""A gdn layer's tokens between its projections, one after another in C on CPU (step.c, built by kernels/clib.py)."""
from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from ..clib import declare


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    return declare(gdn_tokens=([p, p, p, i, i, i, i, p, p, p, p, f, p, p, f, i, p], i))


def fused_gdn_step(mixed: torch.Tensor, conv: torch.Tensor, conv_weight: torch.Tensor, ba: torch.Tensor,
                   A_log: torch.Tensor, dt_bias: torch.Tensor, state: torch.Tensor, scale: float, gate: torch.Tensor,
                   norm_weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """T tokens of a gdn layer from their projections: mixed [1, T, 3HD], ba [1, T, 2H], gate [1, T, HD]; the
    convolution's window conv [1, 3HD, W-1] and the state [1, H, D, D] are carried on. Returns the gated, normed
    output [1, T, HD] before the output projection, or None where the kernel does not apply (not fp32 on CPU,
    batch > 1, autograd, no compiler): the layer's PyTorch path then runs."""
    H, D = state.shape[1], state.shape[2]
    T = mixed.shape[1]
    tensors = (mixed, conv, conv_weight, ba, A_log, dt_bias, state, gate, norm_weight)
    if (state.shape[0] != 1 or mixed.shape != (1, T, 3 * H * D) or D > 256 or conv_weight.shape[-1] < 2
            or torch.is_grad_enabled()
            or any(t.dtype != torch.float32 or t.is_cuda or not t.is_contiguous() for t in tensors)
            or _library() is None):
        return None
    out = torch.empty(1, T, H * D)
    failed = _library().gdn_tokens(mixed.data_ptr(), conv.data_ptr(), conv_weight.data_ptr(), T, H, D,
                                   conv_weight.shape[-1], ba.data_ptr(), A_log.data_ptr(), dt_bias.data_ptr(),
                                   state.data_ptr(), scale, gate.data_ptr(), norm_weight.data_ptr(), eps,
                                   torch.get_num_threads(), out.data_ptr())
    if failed:
        raise MemoryError(f"gdn_tokens: no memory for {T} tokens")
    return out
