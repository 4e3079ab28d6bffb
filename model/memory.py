"""The model's memory of its own context (a kNN-LM, Khandelwal et al. 2020): every position a cache has seen
leaves its final hidden state (unit length) as a key and the token that followed it as the value. At a position
to predict, the `memory_k` keys most like its own hidden state vote for what followed them (a softmax of
`memory_scale` times the cosine similarity), and that vote is mixed into the network's next-token distribution
with weight `memory_weight`.

Why: the network copies poorly from far back (identifier recall 0.35 at 16x the window on stage 15), while its
hidden state where a name is used resembles the one where it was defined: the vote fetches what followed there, at
any distance, for the cost of one dot product per key. Inference only: training and the network's loss never see
it; `memory_weight = 0` turns it off (BENCHMARKS.md, "The model's memory of its context").
"""
from __future__ import annotations

from functools import lru_cache

import torch

from kernels.linear import few_rows_linear

from .cache import MemoryCache
from .config import ModelConfig

QUERY_CHUNK = 256   # query rows scored at a time: [rows, keys] similarities stay small at 128K keys


@lru_cache(maxsize=8)
def projection(d_model: int, dim: int) -> torch.Tensor:
    """A fixed random projection [d_model, dim] (Johnson-Lindenstrauss: cosines kept to about 1/sqrt(dim)). A
    decode step reads every key, so 64 numbers a key rather than 256 make it ~10x cheaper (BENCHMARKS.md)."""
    generator = torch.Generator().manual_seed(20261206)
    return torch.randn(d_model, dim, generator=generator) / dim ** 0.5


def new_memory(config: ModelConfig, device: torch.device | str) -> MemoryCache:
    return MemoryCache(projection(config.d_model, config.memory_dim), device)


def _similarities(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """queries [R, D] fp32 against keys [N, D] fp16: [R, N] in fp32."""
    out = few_rows_linear(queries, keys) if not keys.is_cuda else None
    if out is not None:
        return out
    return (queries.to(keys.dtype) @ keys.T).float() if keys.is_cuda else queries @ keys.float().T


def vote(memory: MemoryCache, hidden: torch.Tensor, positions: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The memory's next-token distribution [R, V] at each of `positions` (absolute, [R]) from their final hidden
    states [R, D]; the memory must hold every position up to the last of them. A position votes with the keys
    before it only (their next tokens are known); where there are none its row is zero."""
    segments = memory.segments()
    keys = [s[0][0] for s in segments]
    tokens = torch.cat([s[1][0] for s in segments])
    queries = memory.key(hidden)
    out = torch.zeros(len(positions), config.vocab_size, device=hidden.device)
    for lo in range(0, len(positions), QUERY_CHUNK):
        rows = slice(lo, lo + QUERY_CHUNK)
        with torch.autocast(hidden.device.type, enabled=False):    # bf16 would not rank cosines of ~0.95 apart
            sims = torch.cat([_similarities(queries[rows], k) for k in keys], dim=1)
        seen = positions[rows, None]                       # keys 0 .. position - 1 vote for tokens 1 .. position
        first = min(int(seen.min()), sims.shape[1])        # only the columns from the first row's own on
        tail = torch.arange(first, sims.shape[1], device=sims.device)[None] >= seen
        sims[:, first:].masked_fill_(tail, float("-inf"))
        top, at = sims.topk(min(config.memory_k, sims.shape[1]), dim=-1)
        weights = torch.softmax(top * config.memory_scale, dim=-1).nan_to_num(0.0)   # no key before: all -inf
        out[rows].scatter_add_(1, tokens[(at + 1).clamp_max(len(tokens) - 1)], weights)
    return out


@torch.no_grad()
def remembered(logits: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor, memory: MemoryCache,
               config: ModelConfig) -> torch.Tensor:
    """The network's logits [R, V] at `positions` (their final hidden states [R, D]) as the logits of its
    distribution mixed with the memory's vote; rows with nothing before them to vote unchanged. Inference only:
    no gradient flows through it."""
    votes = vote(memory, hidden, positions, config)
    probs = torch.softmax(logits.float(), dim=-1)
    has = votes.sum(-1, keepdim=True) > 0
    mixed = torch.where(has, (1 - config.memory_weight) * probs + config.memory_weight * votes, probs)
    return mixed.clamp_min(1e-30).log()


def read(memory: MemoryCache, hidden: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor,
         config: ModelConfig) -> torch.Tensor:
    """A cached forward's step of the memory: the fed positions' final hidden states [T, D] and tokens [T] kept,
    then the logits [R, V] of the last R of them mixed with the vote (`remembered`)."""
    memory.append(hidden[None], tokens[None])
    positions = torch.arange(memory.length - logits.shape[0], memory.length, device=hidden.device)
    return remembered(logits, hidden[-logits.shape[0]:], positions, memory, config)
