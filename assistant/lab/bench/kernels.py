"""`rustle bench kernels`: the attention kernels against PyTorch's on this machine, at an lql layer's shapes
(two query heads sharing one 64-wide latent as keys and values) and a GQA full layer's (4 heads, 2 kv heads).

On CUDA (bf16): the Triton flash kernel (kernels/attention/flash.py) against `scaled_dot_product_attention`
(PyTorch's FlashAttention) for a causal prefill of the whole context and a decode step against it, and the
gated delta rule's decode step in Triton against PyTorch's; `triton.testing.do_bench` times them.

On CPU: the few-row C kernel (kernels/attention) against the PyTorch path it replaces (`merged_attention`:
the fused flash kernel split across the threads) and against `scaled_dot_product_attention` on one
contiguous cache, for a decode step (T = 1), a verified draft (T = 8) and a typed line (T = 32), the cache
in a long shared segment plus a short branch, as the state tree holds it. Timings interleave the candidates
and report the median; FLOPs count QK and PV, bytes the cache read once.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

import torch.nn.functional as F

from kernels.attention import available, segment_attention
from model.layers.common import causal_attention, merged_attention

SHAPES = {"lql": (2, 1, 64), "gqa": (4, 2, 64)}      # query heads, kv heads, head width


@dataclass
class KernelRow:
    kernel: str
    layer: str
    context: int
    rows: int                  # query positions (T)
    ms: float
    gflops: float
    gbps: float


def _cache(context: int, kv: int, dim: int, shared: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The cache as the state tree holds it: a long segment and a 200-position branch, views into buffers."""
    cuts = [0, context - 200, context]
    out = []
    for a, b in zip(cuts, cuts[1:]):
        k = torch.randn(1, kv, b - a + 256, dim)[:, :, :b - a]
        out.append((k, k if shared else torch.randn_like(k)))
    return out


def measure(contexts: list[int], steps: tuple[int, ...] = (1, 8, 32), repeats: int = 20) -> Iterator[KernelRow]:
    torch.manual_seed(0)
    for layer, (heads, kv, dim) in SHAPES.items():
        for context in contexts:
            segments = _cache(context, kv, dim, shared=layer == "lql")
            joined = tuple(torch.cat(x, 2) for x in zip(*segments))
            for T in steps:
                q = torch.randn(1, heads, T, dim)
                past = context - T
                candidates: dict[str, Callable[[], object]] = {
                    "torch merged (flash, split-K)": lambda: merged_attention(q, segments, past),
                    "torch sdpa, contiguous": lambda: causal_attention(q, *joined, past)}
                if available():
                    candidates["segments.c"] = lambda: segment_attention(q, segments, past)
                times = {name: [] for name in candidates}
                with torch.inference_mode():
                    for _ in range(repeats + 2):
                        for name, run in candidates.items():
                            started = time.perf_counter()
                            run()
                            times[name].append(time.perf_counter() - started)
                flops = 4 * heads * T * context * dim
                cache_bytes = (1 if layer == "lql" else 2) * kv * context * dim * 4
                for name, seconds in times.items():
                    s = statistics.median(seconds[2:])
                    yield KernelRow(name, layer, context, T, 1000 * s, flops / s / 1e9, cache_bytes / s / 1e9)


def measure_cuda(contexts: list[int]) -> Iterator[KernelRow]:
    from triton.testing import do_bench

    from kernels.attention.flash import flash_attention
    from kernels.gdn.fused_recurrent import fused_recurrent_gated_delta_rule
    from kernels.gdn.naive import naive_gated_delta_rule

    torch.manual_seed(0)
    cuda = torch.device("cuda")
    for layer, (heads, kv, dim) in SHAPES.items():
        for context in contexts:
            k, v = (torch.randn(1, kv, context, dim, device=cuda, dtype=torch.bfloat16) for _ in range(2))
            cache_bytes = 2 * kv * context * dim * 2
            for T in (context, 1):
                q = torch.randn(1, heads, T, dim, device=cuda, dtype=torch.bfloat16)
                past = context - T
                flops = (2 if T == context else 4) * heads * T * context * dim    # causal prefill: half the pairs
                candidates = {"triton flash": lambda: flash_attention(q, k, v, past),
                              "torch sdpa": lambda: F.scaled_dot_product_attention(
                                  q, k, v, is_causal=T > 1, enable_gqa=True)}
                for name, run in candidates.items():
                    ms = do_bench(run)
                    yield KernelRow(name, layer, context, T, ms, flops / ms / 1e6, cache_bytes / ms / 1e6)
    B, H, K = 1, 4, 64                               # the shipped model's gdn layer, one decode step
    q, k = (F.normalize(torch.randn(B, H, 1, K, device=cuda), dim=-1) for _ in range(2))
    v = torch.randn(B, H, 1, K, device=cuda)
    g, beta = -torch.rand(B, H, 1, device=cuda), torch.rand(B, H, 1, device=cuda)
    state = torch.zeros(B, H, K, K, device=cuda)
    for name, run in {"triton gdn step": lambda: fused_recurrent_gated_delta_rule(q, k, v, g, beta, 0.125, state),
                      "torch gdn step": lambda: naive_gated_delta_rule(q, k, v, g, beta, 0.125, state)}.items():
        ms = do_bench(run)
        yield KernelRow(name, "gdn", 1, 1, ms, 4 * H * K * K / ms / 1e6, 2 * state.numel() * 4 / ms / 1e6)
