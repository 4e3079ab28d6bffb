"""`rms_norm_rows` and `residual_mlp` for a few fp32 rows on CPU, in C (dense.c, built by kernels/clib.py)."""
from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from ..clib import declare
from ..linear import MAX_ROWS


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    return declare(rms_norm_rows=([p, p, i, i, f, p], None), residual_mlp=([p, p, p, f, p, p, i, i, i, i, p], i))


def _applies(*tensors: torch.Tensor) -> bool:
    """fp32 rows on CPU, at most MAX_ROWS of them, outside autograd, with the library built."""
    x = tensors[0]
    rows = x.numel() // max(1, x.shape[-1])
    return (0 < rows <= MAX_ROWS and not torch.is_grad_enabled()
            and all(t.dtype == torch.float32 and not t.is_cuda for t in tensors) and _library() is not None)


def rms_norm_rows(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """nn.RMSNorm's forward for x [..., D]; None where the kernel does not apply (the caller keeps PyTorch's)."""
    if not _applies(x, weight) or weight.shape != x.shape[-1:]:
        return None
    x, out = x.contiguous(), torch.empty(x.shape)
    _library().rms_norm_rows(x.data_ptr(), weight.contiguous().data_ptr(), x.numel() // x.shape[-1], x.shape[-1],
                             eps, out.data_ptr())
    return out


def residual_mlp(x: torch.Tensor, a: torch.Tensor, norm_weight: torch.Tensor, eps: float, gate_up: torch.Tensor,
                 down: torch.Tensor) -> torch.Tensor | None:
    """y = x + a, then y + SwiGLU(rmsnorm(y)) with fp16 weights gate_up [2H, D] (gate rows, then up rows) and
    down [D, H]: a block's second half. None where the kernel does not apply."""
    D, H = x.shape[-1], down.shape[-1]
    if (not _applies(x, a, norm_weight) or a.shape != x.shape or gate_up.shape != (2 * H, D)
            or down.shape != (D, H) or gate_up.dtype != torch.float16 or down.dtype != torch.float16
            or not gate_up.is_contiguous() or not down.is_contiguous()):
        return None
    x, a, out = x.contiguous(), a.contiguous(), torch.empty(x.shape)
    threads = torch.get_num_threads()
    if _library().residual_mlp(x.data_ptr(), a.data_ptr(), norm_weight.contiguous().data_ptr(), eps,
                               gate_up.data_ptr(), down.data_ptr(), x.numel() // D, D, H, threads, out.data_ptr()):
        raise MemoryError(f"residual_mlp: no memory for {x.numel() // D} rows")
    return out
