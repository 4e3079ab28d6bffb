"""Which dtype and weight layout run fastest here. bf16 halves the bytes moved, but only CPUs with BF16
instructions (AVX512-BF16, AMX) compute it natively; elsewhere (e.g. AMD Zen 3, most laptops) every bf16
matmul is emulated and several times slower than fp32 (BENCHMARKS.md: 5.8 vs 45 GFLOPS on a Zen 3 core). There
the model serves in fp32, and a decode step, which reads every weight for one row, reads them in fp16 instead
(model/serving.py). Serving on a CPU picks fp32 even where bf16 is native, wherever the compiled few-token forward
(kernels/decode) is there: it runs a decode step in one C call in fp32 only, ~1.3-1.5 ms a token at 8K on a Zen 3
against 6.6-10 ms for PyTorch's bf16 step on a BF16 CPU (BENCHMARKS.md), and a keystroke is mostly decode.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

from kernels.decode.cpu import available as decode_kernel_built   # the few-token C forward (needs a compiler)

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (read from /proc/cpuinfo; False where it cannot be read)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in BF16_FLAGS)


def fast_dtype(choice: str = "auto", device: str = "cpu") -> torch.dtype:
    """`choice` ("bf16", "fp32", or "auto": bf16 on a GPU; on a CPU fp32 where the compiled few-token forward
    serves it, else bf16 if the CPU has BF16 instructions, else fp32)."""
    if choice not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown dtype '{choice}': use auto, bf16 or fp32")
    if choice == "auto":
        if device != "cpu":
            return torch.bfloat16
        return torch.float32 if decode_kernel_built() or not cpu_has_bf16() else torch.bfloat16
    return torch.bfloat16 if choice == "bf16" else torch.float32


def rows_dtype(choice: str = "auto", device: str = "cpu") -> torch.dtype:
    """The dtype in which a model served in `fast_dtype(choice, device)` multiplies many rows at once (a prefill's
    linear layers; a few rows take the fp16 kernels): for "auto" in fp32 on a CPU with BF16 instructions, bf16,
    which such a CPU multiplies ~4x faster (a Zen 5 core: ~600 against ~150 GFLOPS at 300 rows, BENCHMARKS.md) and
    in which the model was trained (autocast); else the serving dtype itself."""
    served = fast_dtype(choice, device)
    if choice == "auto" and device == "cpu" and served == torch.float32 and cpu_has_bf16():
        return torch.bfloat16
    return served


def fast_layouts(model: torch.nn.Module) -> torch.nn.Module:
    """Store each weight matrix that maps to more features than it reads ([out, in] with out > in, the head
    and the tied embedding included) column-major, for inference on CPU: its BLAS multiplies one row against
    such a weight 2-2.5x faster when the weight is laid out [in, out] (BENCHMARKS.md, decode step); for
    out < in the usual layout is faster. Values and shapes are unchanged; only strides move."""
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) and weight.shape[0] > weight.shape[1]:
                weight.data = weight.data.t().contiguous().t()
    return model
