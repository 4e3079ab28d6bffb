"""Decode latency, prefill throughput and cache size of the default hybrid against its full-attention twin."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from model.cache import Cache, GDNState, KVCache, LatentCache, RingCache
from model.config import ModelConfig
from model.model import RustleLM, twin_config
from model.serving import for_serving


@dataclass
class ModelRow:
    model: str
    context: int
    decode_ms_per_token: float
    prefill_tokens_per_s: float | None  # None where prefill was too slow to run (the cache was filled directly)
    cache_bytes: int
    cache_bytes_by_kind: dict[str, int]
    note: str = ""


def fill_directly(cache: Cache, n: int, generator: torch.Generator) -> None:
    """Put n positions of random keys/values/latents/states into a cache without running the model.

    Decode cost does not depend on what the cache holds, so this times decode at contexts whose
    prefill would take too long (the twin at 128K) honestly.
    """
    for layer in cache.layers:
        if isinstance(layer, KVCache):
            k = layer.store.buffers[0]
            shape = (*k.shape[:2], n, k.shape[3])
            layer.append(torch.randn(shape, generator=generator).to(k.device, k.dtype),
                         torch.randn(shape, generator=generator).to(k.device, k.dtype))
        elif isinstance(layer, LatentCache):
            z = layer.store.buffers[0]
            layer.append(torch.randn(z.shape[0], n, z.shape[2], generator=generator).to(z.device, z.dtype))
        elif isinstance(layer, RingCache):
            shape = (*layer.k.shape[:2], min(n, layer.window), layer.k.shape[3])
            layer.append(torch.randn(shape, generator=generator).to(layer.k.device, layer.k.dtype),
                         torch.randn(shape, generator=generator).to(layer.k.device, layer.k.dtype))
            layer.seen = n
        elif isinstance(layer, GDNState):
            layer.state.copy_(torch.randn(layer.state.shape, generator=generator).to(layer.state.device) * 0.1)
    cache.position = n


@torch.inference_mode()
def measure(model: RustleLM, name: str, context: int, prefill_limit: int, decode_steps: int = 32) -> ModelRow:
    generator = torch.Generator().manual_seed(0)
    device = model.embed.weight.device
    cache = model.new_cache()                    # in the model's dtype, on its device
    prefill, note = None, ""
    if context <= prefill_limit:
        tokens = torch.randint(0, model.config.vocab_size, (1, context), generator=generator).to(device)
        start = time.perf_counter()
        model(tokens, cache, last=1)
        _sync(device)
        prefill = context / (time.perf_counter() - start)
    else:
        fill_directly(cache, context, generator)
        note = f"prefill not run (over --prefill-limit {prefill_limit}); cache filled directly"
    cache_bytes = cache.nbytes()
    by_kind: dict[str, int] = {}
    for kind, layer in zip(model.config.layer_pattern, cache.layers):
        by_kind[kind] = by_kind.get(kind, 0) + layer.nbytes()
    token = torch.tensor([[1]], device=device)
    for _ in range(3):  # warm-up steps: first calls allocate (and compile the GPU's kernels)
        model(token, cache)
    times = []
    for _ in range(decode_steps):
        _sync(device)
        start = time.perf_counter()
        model(token, cache)
        _sync(device)
        times.append(time.perf_counter() - start)
    return ModelRow(name, context, 1000 * statistics.median(times), prefill, cache_bytes, by_kind, note)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def models(config: ModelConfig, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> dict[str, RustleLM]:
    """The hybrid and its twin with random weights, laid out as the engine serves them."""
    torch.manual_seed(0)
    out = {}
    for name, variant in (("hybrid", config), ("twin", twin_config(config))):
        model = RustleLM(variant).to(device, dtype).eval()
        out[name] = for_serving(model, device)
    return out
