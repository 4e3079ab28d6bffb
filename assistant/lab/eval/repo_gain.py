"""Does the model read its repository context? Held-out crates packed as in training, up to `ctx` tokens;
each file that starts `min_start` tokens or more into the pack is scored twice: after the packed prefix
(its crate's earlier files) and alone (its own repository and file header only). The gain is
`1 - repo / alone` in bits per byte over those files; a model that copies from context gains a lot,
since the other files define the names this one uses. Loss by position runs up to `ctx`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from model.memory import new_memory, remembered
from model.model import RustleLM

from ..train.data import PackConfig, Packer
from .ppl import position_buckets

HEAD_CHUNK = 2048  # positions per head + cross-entropy chunk: [T, V] logits never exist at 64K tokens


@dataclass
class RepoGainReport:
    ctx: int
    crates: int
    files: int                    # files scored (starting at or past min_start)
    tokens: int
    bytes: int
    repo_bits_per_byte: float
    alone_bits_per_byte: float
    gain: float                   # 1 - repo / alone
    loss_by_position: dict[str, float] = field(default_factory=dict)


@torch.inference_mode()
def token_losses(model: RustleLM, ids: list[int], bf16: bool = True) -> torch.Tensor:
    """Nats of every token after the first: [len(ids) - 1], with the model's memory of the sequence so far mixed
    in where its config has one (model/memory.py), as a cache would."""
    tokens, reader = torch.tensor([ids]), model.memory_reader
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden, states = (s[0] for s in model.hidden_and_read(tokens[:, :-1], layer=reader.layer))
    memory = new_memory(reader, hidden.device) if model.config.memory_weight > 0 else None
    if memory is not None:
        memory.append(states[None], tokens[:, :-1])
    out = []
    for start in range(0, hidden.shape[0], HEAD_CHUNK):
        rows = hidden[start:start + HEAD_CHUNK].float()
        logits = F.linear(rows, model.head_weight.float())
        if memory is not None:
            logits = remembered(logits, states[start:start + HEAD_CHUNK].float(),
                                torch.arange(start, start + rows.shape[0]), memory, model.config)
        out.append(F.cross_entropy(logits, tokens[0, 1 + start:1 + start + HEAD_CHUNK], reduction="none"))
    return torch.cat(out)


def packed_crate(packer: Packer, name: str, files: list[tuple[str, str]], ctx: int) -> tuple[list[int], list[tuple]]:
    """The crate packed without FIM, cut to ctx + 1 tokens, and each file's (header start, text start, end)."""
    ids, spans = packer.layout.repo_header(name), []
    for path, text in files:
        start = len(ids)
        ids += packer.layout.file_header(path)
        body = len(ids)
        ids += packer.layout.encode(text)
        spans.append((path, start, body, min(len(ids), ctx + 1)))
        if len(ids) > ctx:
            break
    return ids[:ctx + 1], spans


def repo_gain(model: RustleLM, tok: Tokenizer, crates: Iterable[tuple[str, list[tuple[str, str]]]], ctx: int,
              min_start: int = 4096, bf16: bool = True) -> RepoGainReport:
    """`crates`: (name, [(path, text)]) in the order training packs them."""
    model.eval()
    packer = Packer(tok, PackConfig(fim_rate=0.0))
    buckets = position_buckets(ctx)
    sums, counts = [0.0] * len(buckets), [0] * len(buckets)
    repo_nats = alone_nats = 0.0
    n_crates = n_files = n_tokens = n_bytes = 0
    for name, files in crates:
        ids, spans = packed_crate(packer, name, files, ctx)
        scored = [s for s in spans if s[1] >= min_start and s[3] > s[2]]
        if not scored:
            continue
        nats = token_losses(model, ids, bf16)            # nats[i] is the loss of ids[i + 1]
        for b, (lo, hi) in enumerate(buckets):
            part = nats[lo:hi]
            sums[b] += float(part.sum())
            counts[b] += part.numel()
        n_crates += 1
        for path, start, body, end in scored:
            text_ids = ids[body:end]
            repo_nats += float(nats[body - 1:end - 1].sum())
            alone = packer.layout.repo_header(name) + packer.layout.file_header(path)
            alone_nats += float(token_losses(model, alone + text_ids, bf16)[len(alone) - 1:].sum())
            n_files += 1
            n_tokens += len(text_ids)
            n_bytes += len(tok.decode(text_ids).encode())
    if n_files == 0:
        raise ValueError(f"no file starts {min_start} tokens or more into a crate within {ctx} tokens: "
                         "pass more or larger crates, or a smaller --min-start")
    repo = repo_nats / math.log(2) / n_bytes
    alone = alone_nats / math.log(2) / n_bytes
    by_position = {f"{lo}-{hi}": sums[b] / counts[b] for b, (lo, hi) in enumerate(buckets) if counts[b]}
    return RepoGainReport(ctx, n_crates, n_files, n_tokens, n_bytes, repo, alone, 1 - repo / alone, by_position)


def sample_crates(crates: Iterable[tuple[str, list[tuple[str, str]]]], every: int,
                  min_files: int = 3) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every `every`-th crate with at least `min_files` files (a fixed, spread-out sample of a split)."""
    kept = [c for c in crates if len(c[1]) >= min_files]
    return kept[::every]

