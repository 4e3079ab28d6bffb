"""The model's memory of its own context (a kNN-LM, Khandelwal et al. 2020): every position a cache has seen
leaves a key made of a hidden state and its token, and the token that followed it as the value. At a position to
predict, the `memory_k` keys most like its own vote for what followed them (a softmax of a scale times the cosine
similarity), and that vote is mixed into the network's next-token distribution with a weight.

How it reads is a `MemoryReader`. The constant one (any model): keys are the final hidden state through a fixed
random projection, the scale `memory_scale`, the weight `memory_weight`. A fitted one (`memory.safetensors` in the
model folder, written by `rustle train-memory`): keys are the state of a chosen layer (the output of a middle block,
RMS-normalised, or the final state) and the current token's embedding, through maps learned so that a position's key
lies near earlier keys followed by the same token, and the weight is a gate over how sure the vote and the network
are (`GATE_FEATURES`). A fitted reader may also weigh, for each of the nearest keys, how like the query's own
predecessor its predecessor is (`previous`): where a span is being copied both match, where a key only resembles the
query by chance the one before it does not (an induction head's check, on the memory's own keys).

Why: the network copies poorly from far back (identifier recall 0.35 at 16x the window on stage 15), while its
hidden state where a name is used resembles the one where it was defined: the vote fetches what followed there, at
any distance, for the cost of one dot product per key. A middle block's output tells the copied name's positions
apart far better than the final state, which is shaped for the next token (BENCHMARKS.md, "A middle layer's
memory"). The network's loss never sees the vote, but a training run may ask the network for states its reader
tells apart (`vote_nats`, a recipe's `memory_loss`); `memory_weight = 0` turns it off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch

from kernels.linear import few_rows_linear

from .cache import MemoryCache
from .config import ModelConfig
from .loss import IGNORE

QUERY_CHUNK = 256   # query rows scored at a time: [rows, keys] similarities stay small at 128K keys
CANDIDATES = 4      # a reader with `previous` rescores the CANDIDATES x memory_k nearest keys
MAX_PREVIOUS = 100.0  # beyond it a weight of the key before is a mistake (or hostile), not a fitted reader
GATE_FEATURES = ("bias", "vote_max", "top_similarity", "mean_similarity", "model_max", "model_entropy", "agreement")


@lru_cache(maxsize=8)
def projection(d_model: int, dim: int) -> torch.Tensor:
    """A fixed random projection [d_model, dim] (Johnson-Lindenstrauss: cosines kept to about 1/sqrt(dim)). A
    decode step reads every key, so 64 numbers a key rather than 256 make it ~10x cheaper (BENCHMARKS.md)."""
    generator = torch.Generator().manual_seed(20261206)
    return torch.randn(d_model, dim, generator=generator) / dim ** 0.5


@dataclass
class MemoryReader:
    """A key = unit(hidden @ key_hidden + token_keys[token]); a vote = softmax(scale x score) over the top keys,
    a key's score its cosine with the query, or with `previous` > 0 (cosine + previous x the cosine of the keys
    before them) / (1 + previous) among the CANDIDATES x memory_k nearest; its weight =
    sigmoid(gate . GATE_FEATURES)."""
    key_hidden: torch.Tensor            # [D, d]
    key_token: torch.Tensor | None      # [D, d]: the map of the current token's embedding, None: hidden only
    scale: float
    gate: torch.Tensor                  # [len(GATE_FEATURES)], the bias first
    token_keys: torch.Tensor | None = None   # [V, d] = embeddings @ key_token, set by `with_embeddings`
    layer: int | None = None            # the block whose output it reads (`RustleLM.hidden_and_read`); None: the final
    previous: float = 0.0               # weight of the key before a candidate against the key before the query
    reads_features: bool = field(init=False, repr=False)   # False: the weight is the bias alone (the constant one)

    def __post_init__(self) -> None:     # once, not at each decode step
        self.reads_features = bool(self.gate[1:].any())

    @classmethod
    def constant(cls, config: ModelConfig) -> MemoryReader:
        gate = torch.zeros(len(GATE_FEATURES))
        gate[0] = math.log(config.memory_weight / (1 - config.memory_weight)) if config.memory_weight > 0 else -30.0
        return cls(projection(config.d_model, config.memory_dim), None, config.memory_scale, gate)

    def with_embeddings(self, embeddings: torch.Tensor) -> MemoryReader:
        """This reader with its token keys computed from the model's embeddings [V, D] (once, at load)."""
        if self.key_token is None:
            return self
        return replace(self, token_keys=embeddings.detach().float() @ self.key_token.float())

    def bf16_rounded(self, embeddings: torch.Tensor) -> MemoryReader:
        """This reader as its bf16 file holds it (model/io.py: save_memory)."""
        def rounded(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(torch.bfloat16).float()
        scale, previous = (float(torch.tensor(x).to(torch.bfloat16)) for x in (self.scale, self.previous))
        return replace(self, key_hidden=rounded(self.key_hidden), key_token=rounded(self.key_token), scale=scale,
                       gate=rounded(self.gate), previous=previous, token_keys=None).with_embeddings(embeddings)

    def keys(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The states it reads [..., D] (`layer`'s) and their tokens [...] as keys [..., d], unit length, fp32."""
        with torch.no_grad():
            return self.keys_with_grad(hidden, tokens)

    def keys_with_grad(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`keys`, differentiable with respect to `hidden` (training the network for its memory)."""
        with torch.autocast(hidden.device.type, enabled=False):
            key = hidden.float() @ self.key_hidden.to(hidden.device)
            if self.token_keys is not None:
                key = key + self.token_keys.to(hidden.device)[tokens]
            return torch.nn.functional.normalize(key, dim=-1)

    def weight(self, probs: torch.Tensor, votes: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """The vote's weight [R, 1] from the network's distribution and the vote [R, V], top cosines [R, k]."""
        if not self.reads_features:
            return torch.sigmoid(self.gate[:1].to(probs.device)).expand(len(probs), 1)
        features = gate_features(probs, votes, top)
        return torch.sigmoid(features @ self.gate.to(features.device))[:, None]


def gate_features(probs: torch.Tensor, votes: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """[R, len(GATE_FEATURES)]: how sure the vote and the network are, and how near the nearest keys lie."""
    found = top > -1.1                                         # fewer keys than k before the position: -inf
    mean = top.where(found, 0.0).sum(-1) / found.sum(-1).clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return torch.stack([torch.ones_like(entropy), votes.max(-1).values, top[:, 0].clamp_min(-1.0), mean,
                        probs.max(-1).values, entropy, (probs * votes).sum(-1)], -1)


def vote_nats(keys: torch.Tensor, nexts: torch.Tensor, queries: torch.Tensor,
              scale: float | torch.Tensor) -> torch.Tensor | None:
    """The vote's nats at `queries` [Q] of one sequence, over every earlier key (not the top k): keys [T, d] at
    unit length, the tokens that followed them [T] (IGNORE neither asks nor answers). The mean over the queries
    that have an earlier key followed by their own next token (TRIME's training loss, Zhong et al. 2022); None
    where none has."""
    with torch.autocast(keys.device.type, enabled=False):     # bf16 would not rank cosines of ~0.95 apart
        scores = (keys[queries] @ keys.T) * scale
    valid = nexts != IGNORE
    earlier = torch.arange(len(keys), device=keys.device)[None] < queries[:, None]
    same = earlier & valid[None] & (nexts[None] == nexts[queries][:, None])
    has = same.any(1) & valid[queries]
    if not has.any():
        return None
    scores = scores.masked_fill(~earlier, -1e9)
    nats = torch.logsumexp(scores, 1) - torch.logsumexp(scores.masked_fill(~same, -1e9), 1)
    return nats[has].mean()


def new_memory(reader: MemoryReader, device: torch.device | str) -> MemoryCache:
    return MemoryCache(reader, device)


def _similarities(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """queries [R, D] fp32 against keys [N, D] fp16: [R, N] in fp32."""
    out = few_rows_linear(queries, keys) if not keys.is_cuda else None
    if out is not None:
        return out
    return (queries.to(keys.dtype) @ keys.T).float() if keys.is_cuda else queries @ keys.float().T


def vote(memory: MemoryCache, states: torch.Tensor, positions: torch.Tensor,
         config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory's next-token distribution [R, V] at each of `positions` (absolute, [R]) from the states its reader
    reads there [R, D], and the cosines of its top keys [R, k] (-inf where there were fewer); the memory must hold
    every position up to the last of them. A position votes with the keys before it only (their next tokens are
    known); where there are none its row is zero."""
    segments = memory.segments()
    keys = [s[0][0] for s in segments]
    tokens = torch.cat([s[1][0] for s in segments])
    queries = memory.reader.keys(states, tokens[positions])
    k = min(config.memory_k, tokens.shape[0])
    out = torch.zeros(len(positions), config.vocab_size, device=states.device)
    tops = torch.full((len(positions), k), float("-inf"), device=states.device)
    reader = memory.reader
    candidates = min(CANDIDATES * k, tokens.shape[0]) if reader.previous > 0 else k
    for lo in range(0, len(positions), QUERY_CHUNK):
        rows = slice(lo, lo + QUERY_CHUNK)
        with torch.autocast(states.device.type, enabled=False):    # bf16 would not rank cosines of ~0.95 apart
            sims = torch.cat([_similarities(queries[rows], key) for key in keys], dim=1)
            seen = positions[rows, None]                   # keys 0 .. position - 1 vote for tokens 1 .. position
            first = min(int(seen.min()), sims.shape[1])    # only the columns from the first row's own on
            tail = torch.arange(first, sims.shape[1], device=sims.device)[None] >= seen
            sims[:, first:].masked_fill_(tail, float("-inf"))
            top, at = sims.topk(candidates, dim=-1)
            if reader.previous > 0:
                top, at = _rescored(keys, top, at, positions[rows], reader.previous, k)
        weights = torch.softmax(top * reader.scale, dim=-1).nan_to_num(0.0)   # no key before: all -inf
        out[rows].scatter_add_(1, tokens[(at + 1).clamp_max(len(tokens) - 1)], weights)
        tops[rows] = top
    return out, tops


def _rows(segments: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """The keys at absolute positions `index` [...] of the memory's segments (oldest first), in fp32 [..., d]."""
    out = torch.zeros(*index.shape, segments[0].shape[-1], device=index.device)
    start = 0
    for segment in segments:
        inside = (index >= start) & (index < start + len(segment))
        out[inside] = segment[index[inside] - start].float()
        start += len(segment)
    return out


def _rescored(segments: list[torch.Tensor], top: torch.Tensor, at: torch.Tensor, positions: torch.Tensor,
              previous: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of the candidates (cosines `top` of keys `at`, [R, c]) by (cosine + previous x the cosine of the
    key before each with the key before the query) / (1 + previous): an earlier position whose own predecessor also
    looks like the query's is where a copied span goes on (an induction head's check). No key before: 0."""
    before = _rows(segments, (at - 1).clamp_min(0))                          # [R, c, d]
    query_before = _rows(segments, (positions - 1).clamp_min(0))            # [R, d]
    agree = (before @ query_before[:, :, None])[..., 0]
    agree = agree.where((at > 0) & (positions[:, None] > 0), torch.zeros_like(agree))
    best, j = ((top + previous * agree) / (1 + previous)).topk(k, dim=-1)
    return best, at.gather(1, j)


@torch.no_grad()
def remembered(logits: torch.Tensor, states: torch.Tensor, positions: torch.Tensor, memory: MemoryCache,
               config: ModelConfig) -> torch.Tensor:
    """The network's logits [R, V] at `positions` (the states the reader reads there [R, D]) as the logits of its
    distribution mixed with the memory's vote; rows with nothing before them to vote unchanged. Inference only:
    no gradient flows through it."""
    votes, top = vote(memory, states, positions, config)
    probs = torch.softmax(logits.float(), dim=-1)
    weight = memory.reader.weight(probs, votes, top)
    has = votes.sum(-1, keepdim=True) > 0
    mixed = torch.where(has, (1 - weight) * probs + weight * votes, probs)
    return mixed.clamp_min(1e-30).log()


def read(memory: MemoryCache, states: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor,
         config: ModelConfig) -> torch.Tensor:
    """A cached forward's step of the memory: the fed positions' states the reader reads [T, D] and tokens [T] kept,
    then the logits [R, V] of the last R of them mixed with the vote (`remembered`)."""
    memory.append(states[None], tokens[None])
    positions = torch.arange(memory.length - logits.shape[0], memory.length, device=states.device)
    return remembered(logits, states[-logits.shape[0]:], positions, memory, config)
