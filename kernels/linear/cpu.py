"""`few_rows_linear`: x [..., in] (fp32, a few rows) times an fp16 weight [out, in], in C on CPU."""
from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from ..clib import declare

MAX_ROWS = 32                 # rows up to which these kernels beat the fp32 BLAS on the model's weights (BENCHMARKS)
THREADED = 1 << 16            # weights (out * in) from which the rows of outputs are split across threads


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    p, i = ctypes.c_void_p, ctypes.c_int
    return declare(gemv_f16=([p, p, i, i, i, p, i], None))


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """x [..., in] @ weight.T for weight [out, in] in fp16 (row-major), in fp32; None where the kernel does not
    apply: more than MAX_ROWS rows, not fp32 on CPU, autograd, no compiler."""
    rows = x.numel() // max(1, x.shape[-1])
    if (rows > MAX_ROWS or rows == 0 or x.dtype != torch.float32 or x.is_cuda or weight.dtype != torch.float16
            or not weight.is_contiguous() or weight.shape[1] != x.shape[-1] or torch.is_grad_enabled()
            or _library() is None):
        return None
    x = x.contiguous()
    out = torch.empty(*x.shape[:-1], weight.shape[0])
    threads = torch.get_num_threads() if weight.numel() >= THREADED else 1
    _library().gemv_f16(x.data_ptr(), weight.data_ptr(), rows, weight.shape[1], weight.shape[0], out.data_ptr(),
                        threads)
    return out
