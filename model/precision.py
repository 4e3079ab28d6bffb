"""Which dtype and weight layout run fastest here. bf16 halves the bytes moved, but only CPUs with BF16
instructions (AVX512-BF16, AMX) compute it natively; elsewhere (e.g. AMD Zen 3, most laptops) every bf16
matmul is emulated and several times slower than fp32 (BENCHMARKS.md: 5.8 vs 45 GFLOPS on a Zen 3 core). There
the model serves in fp32, and a decode step, which reads every weight for one row, reads them in fp16 instead
(`half_weights`: kernels/linear, fp32 arithmetic; the shipped model's logits move by at most 0.005).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.linear import few_rows_linear

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
    """`choice` ("bf16", "fp32", or "auto": bf16 on a GPU or a CPU with BF16 instructions, else fp32)."""
    if choice not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown dtype '{choice}': use auto, bf16 or fp32")
    if choice == "auto":
        return torch.bfloat16 if device != "cpu" or cpu_has_bf16() else torch.float32
    return torch.bfloat16 if choice == "bf16" else torch.float32


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


class HalfWeightLinear(nn.Linear):
    """nn.Linear that also keeps its weight in fp16 (row-major), through which a few rows go (kernels/linear);
    more rows, other dtypes and autograd take F.linear on the fp32 weight."""
    half: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = few_rows_linear(x, self.half)
        if out is None:
            return F.linear(x, self.weight, self.bias)
        return out if self.bias is None else out + self.bias


FP16_MAX = 65504.0


def half_weights(model: nn.Module) -> nn.Module:
    """Give every linear layer of a model served in fp32 on CPU, and its head (tied to the embedding by default),
    an fp16 copy of its weight for a few rows at a time. Weights that fp16 cannot hold keep the fp32 path."""
    with torch.no_grad():
        if model.head is None:                  # tied: a head module on the embedding's own weight
            model.head = nn.Linear(model.embed.weight.shape[1], model.embed.weight.shape[0], bias=False,
                                   device="meta")
            model.head.weight = model.embed.weight
        for module in model.modules():
            if type(module) is nn.Linear and module.weight.dtype == torch.float32 \
                    and float(module.weight.abs().max()) < FP16_MAX:
                module.__class__ = HalfWeightLinear
                module.half = module.weight.detach().half().contiguous()
    return model


def for_serving(model: nn.Module, device: str) -> nn.Module:
    """The model as the engine serves it on `device`: on CPU, wide weights column-major (`fast_layouts`) and, in
    fp32, fp16 copies of the weights for decode steps (`half_weights`)."""
    if device != "cpu":
        return model
    model = fast_layouts(model)
    return half_weights(model) if model.embed.weight.dtype == torch.float32 else model
