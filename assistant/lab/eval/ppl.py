"""Bits per byte of a model on source files, and its loss by position in the context window."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from model.model import RustleLM


@dataclass
class PerplexityReport:
    bits_per_byte: float
    tokens: int
    bytes: int
    loss_by_position: dict[str, float] = field(default_factory=dict)  # "lo-hi" -> mean nats/token


def position_buckets(context: int) -> list[tuple[int, int]]:
    """[0, 64), [64, 128), [128, 256) … up to the context: log-spaced, so late positions are visible."""
    edges = [0, 64]
    while edges[-1] < context:
        edges.append(min(context, edges[-1] * 2))
    return list(zip(edges[:-1], edges[1:]))


@torch.no_grad()
def perplexity(model: RustleLM, tok: Tokenizer, texts: list[str], context: int = 1024,
               bf16: bool = True) -> PerplexityReport:
    """Each text scored on its own in windows of `context` tokens (no overlap); every token counted once."""
    model.eval()
    buckets = position_buckets(context)
    sums, counts = [0.0] * len(buckets), [0] * len(buckets)
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        total_bytes += len(text.encode())
        for start in range(0, max(1, len(ids) - 1), context):
            window = torch.tensor(ids[start:start + context + 1])[None]
            if window.shape[1] < 2:
                continue
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(window[:, :-1])
            nats = torch.nn.functional.cross_entropy(logits.float()[0], window[0, 1:], reduction="none")
            total_nats += float(nats.sum())
            total_tokens += nats.numel()
            for b, (lo, hi) in enumerate(buckets):
                part = nats[lo:hi]
                sums[b] += float(part.sum())
                counts[b] += part.numel()
    by_position = {f"{lo}-{hi}": sums[b] / counts[b] for b, (lo, hi) in enumerate(buckets) if counts[b]}
    return PerplexityReport(total_nats / math.log(2) / max(1, total_bytes), total_tokens, total_bytes, by_position)
