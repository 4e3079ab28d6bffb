"""`rustle bench kernels`: the attention kernels against PyTorch's on this machine, at an lql layer's shapes
(two query heads sharing one 64-wide latent as keys and values) and a GQA full layer's (4 heads, 2 kv heads).

On CUDA (bf16): the Triton flash kernel (kernels/attention/flash.py) against `scaled_dot_product_attention`
(PyTorch's FlashAttention) for a causal prefill of the whole context and a decode step against it; the gated
delta rule's chunkwise prefill (fp32 state) and decode step in Triton against PyTorch's forms and, where
installed, flash-linear-attention's; and the device's own ceilings (a bf16 matmul, a copy) to read them
against. `triton.testing.do_bench` times them.

On CPU: the few-row C kernel (kernels/attention) against the PyTorch path it replaces (`merged_attention`:
the fused flash kernel split across the threads) and against `scaled_dot_product_attention` on one
contiguous cache, for a decode step (T = 1), a verified draft (T = 8) and a typed line (T = 32), the cache
in a long shared segment plus a short branch, as the state tree holds it; for lql also block-selected attention
(kernels/attention/select.py, the shipped model's 2,048 recent keys and 32 blocks, with the blocks' bounds kept
as the cache keeps them). Timings interleave the candidates and report the median; FLOPs count QK and PV over
the keys each query sees, bytes the cache read once.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

import torch.nn.functional as F

from kernels.attention import available, segment_attention, selected_attention
from kernels.attention.select import BLOCK, block_bounds
from model.layers.common import causal_attention, merged_attention

SHAPES = {"lql": (2, 1, 64), "gqa": (4, 2, 64)}      # query heads, kv heads, head width
RECENT, BLOCKS = 2048, 32                             # the shipped model's lql selection (model/config.py)


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
                if layer == "lql":
                    kept = block_bounds([k[:, 0] for k, _ in segments], 0, (context - RECENT) // BLOCK)
                    candidates["select.py"] = lambda: selected_attention(
                        q, segments, past, RECENT, BLOCKS, lambda keys, n: (kept[0][:, :n], kept[1][:, :n]))
                times = {name: [] for name in candidates}
                with torch.inference_mode():
                    for _ in range(repeats + 2):
                        for name, run in candidates.items():
                            started = time.perf_counter()
                            run()
                            times[name].append(time.perf_counter() - started)
                cache_bytes = (1 if layer == "lql" else 2) * kv * context * dim * 4
                for name, seconds in times.items():
                    seen = min(context, RECENT + BLOCK + BLOCKS * BLOCK) if name == "select.py" else context
                    s = statistics.median(seconds[2:])
                    yield KernelRow(name, layer, context, T, 1000 * s, 4 * heads * T * seen * dim / s / 1e9,
                                    cache_bytes / s / 1e9)


Timer = Callable[[Callable[[], object]], float]       # ms per call


def measure_gpu(contexts: list[int], device: str = "cuda", dtype: torch.dtype = torch.bfloat16,
                timer: Timer | None = None, ceiling: int = 8192) -> Iterator[KernelRow]:
    """The Triton kernels against PyTorch's on `device` (a GPU; the tests run it on CPU tensors under Triton's
    interpreter, in fp32, with a plain timer and a small `ceiling` matmul)."""
    if timer is None:
        from triton.testing import do_bench as timer
    from kernels.attention.flash import flash_attention

    torch.manual_seed(0)
    size = torch.finfo(dtype).bits // 8
    for layer, (heads, kv, dim) in SHAPES.items():
        for context in contexts:
            k, v = (torch.randn(1, kv, context, dim, device=device, dtype=dtype) for _ in range(2))
            cache_bytes = 2 * kv * context * dim * size
            for T in (context, 1):
                q = torch.randn(1, heads, T, dim, device=device, dtype=dtype)
                past = context - T
                flops = (2 if T == context else 4) * heads * T * context * dim    # causal prefill: half the pairs
                candidates = {"triton flash": lambda: flash_attention(q, k, v, past),
                              "torch sdpa": lambda: F.scaled_dot_product_attention(
                                  q, k, v, is_causal=T > 1, enable_gqa=True)}
                for name, run in candidates.items():
                    ms = timer(run)
                    yield KernelRow(name, layer, context, T, ms, flops / ms / 1e6, cache_bytes / ms / 1e6)
    yield from _gdn(contexts, device, timer)
    yield from _ceilings(device, dtype, timer, ceiling)


def _gdn(contexts: list[int], device: str, timer: Timer) -> Iterator[KernelRow]:
    from kernels.gdn.chunk import torch_chunk_gated_delta_rule
    from kernels.gdn.fused_chunk import fused_chunk_gated_delta_rule
    from kernels.gdn.fused_recurrent import fused_recurrent_gated_delta_rule
    from kernels.gdn.naive import naive_gated_delta_rule

    B, H, K = 1, 4, 64                                     # the shipped model's gdn layer
    fla = _fla_chunk()
    for T in [*(c for c in contexts if c <= 32768), 1]:
        q, k = (F.normalize(torch.randn(B, H, T, K, device=device), dim=-1) for _ in range(2))
        v = torch.randn(B, H, T, K, device=device)
        g, beta = -torch.rand(B, H, T, device=device), torch.rand(B, H, T, device=device)
        state = torch.zeros(B, H, K, K, device=device)
        if T == 1:
            candidates = {"triton gdn step": lambda: fused_recurrent_gated_delta_rule(q, k, v, g, beta, 0.125, state),
                          "torch gdn step": lambda: naive_gated_delta_rule(q, k, v, g, beta, 0.125, state)}
        else:
            candidates = {"triton gdn chunk": lambda: fused_chunk_gated_delta_rule(q, k, v, g, beta, 0.125, state),
                          "torch gdn chunk": lambda: torch_chunk_gated_delta_rule(q, k, v, g, beta, 0.125, state)}
            if fla is not None:
                layout = [x.transpose(1, 2).contiguous() for x in (q, k, v, g, beta)]   # fla: [B, T, H, ...]
                candidates["fla gdn chunk"] = lambda: fla(*layout, scale=0.125, initial_state=state)
        with torch.inference_mode():
            for name, run in candidates.items():
                ms = timer(run)
                yield KernelRow(name, "gdn", T, T, ms, 6 * H * T * K * K / ms / 1e6,
                                (3 * T * H * K + 2 * state.numel()) * 4 / ms / 1e6)


def _fla_chunk() -> Callable | None:
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError:
        return None
    return chunk_gated_delta_rule


def _ceilings(device: str, dtype: torch.dtype, timer: Timer, n: int) -> Iterator[KernelRow]:
    """What the device does at best: an n x n x n matmul and a device-to-device copy of n^2 * 4 elements."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    ms = timer(lambda: a @ a)
    size = torch.finfo(dtype).bits // 8
    yield KernelRow("ceiling: matmul", "-", n, n, ms, 2 * n ** 3 / ms / 1e6, 3 * n * n * size / ms / 1e6)
    x = torch.empty(4 * n * n, device=device)
    y = torch.empty_like(x)
    ms = timer(lambda: y.copy_(x))
    yield KernelRow("ceiling: copy", "-", 0, 0, ms, 0.0, 2 * x.numel() * 4 / ms / 1e6)
