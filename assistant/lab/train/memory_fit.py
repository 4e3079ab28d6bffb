"""Fitting the memory's reader (model/memory.py) to a trained model, whose weights stay as they are.

Two steps on training crates packed as repositories (no FIM), their hidden states computed once:
1. the key maps: a position's key (the state of the recipe's `layer` and its token's embedding, each through a
   [D, d] map, at unit length) is pulled towards the keys of earlier positions that were followed by the same
   token and pushed from the rest, with a softmax over every earlier key at a learned scale: the loss is the
   vote's own nats (over all earlier keys, not the top k) on positions that have such a key (the contrastive loss
   of kNN-LM training, TRIME, Zhong et al. 2022, with the network frozen). The hidden map starts at the constant
   reader's projection;
2. the gate: the vote's weight as sigmoid(gate . GATE_FEATURES), fitted by the mixture's nats on the same crates'
   positions with the fitted keys, the product's own `vote`.
At `anonymize_rate`, a training crate's own names are first renamed to fresh random ones (anonymize.py), as for the
network's training: there a name can only come from the crate's other files, as in the recall probes. Measured on
stage 15, it lowered their recall (BENCHMARKS.md, "the reader's gate fitted on renamed crates"); 0 by default.
The report scores validation crates past `report_from` tokens: the network alone, the constant reader and the
fitted one (nats per token), through the product's `remembered`.
"""
from __future__ import annotations

import math
import random
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from model.config import MAX_KEY_DIM
from model.memory import MAX_PREVIOUS, MemoryReader, gate_features, new_memory, remembered, vote, vote_nats
from model.model import RustleLM

from ..eval.repo_gain import packed_crate, sample_crates
from .anonymize import anonymize, common_names
from .data import PackConfig, Packer

Crates = Iterable[tuple[str, list[tuple[str, str]]]]


@dataclass(frozen=True)
class MemoryFitConfig:
    crates: int = 30             # training crates (every `every`-th with 3 files or more, at least `min_tokens`)
    every: int = 23
    validation_crates: int = 6   # validation crates for the report (every `validation_every`-th)
    validation_every: int = 2
    ctx: int = 16384             # tokens a crate is packed to
    min_tokens: int = 8192       # crates shorter than this are skipped
    queries: int = 512           # positions a key-map step scores, drawn past `min_position`
    min_position: int = 1024
    steps: int = 1000            # key-map steps, one crate each
    lr: float = 3e-3
    gate_every: int = 4          # every 4th position past `min_position` fits the gate
    gate_steps: int = 600
    gate_lr: float = 0.05
    report_from: int = 4096      # validation positions scored from here on
    seed: int = 0
    layer: int | None = None     # the block whose output makes the keys (none: the final states)
    dim: int | None = None       # numbers a key (none: the model's memory_dim, the constant reader's)
    previous: float = 0.0        # weight of the key before a candidate in its score (model/memory.py), 0: none
    anonymize_rate: float = 0.0  # share of training crates whose own names are renamed first (anonymize.py)
    common_share: float = 0.02   # names in this share of the training crates are never renamed (the packer's)

    def __post_init__(self) -> None:
        counts = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name not in ("lr", "gate_lr", "seed", "layer", "dim", "previous", "anonymize_rate",
                                    "common_share")}
        wrong = [name for name, value in counts.items() if not isinstance(value, int) or value < 1]
        if self.layer is not None and not (isinstance(self.layer, int) and self.layer >= 0):
            raise ValueError(f"layer = {self.layer!r}: expected a block's index (0 is the first) or no key")
        if self.dim is not None and not (isinstance(self.dim, int) and 1 <= self.dim <= MAX_KEY_DIM):
            raise ValueError(f"dim = {self.dim!r}: expected a whole number from 1 to {MAX_KEY_DIM} or no key")
        if not (isinstance(self.previous, (int, float)) and 0 <= self.previous <= MAX_PREVIOUS):
            raise ValueError(f"previous = {self.previous!r}: expected a number from 0 to {MAX_PREVIOUS}")
        if not all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in (self.anonymize_rate, self.common_share)):
            raise ValueError(f"anonymize_rate = {self.anonymize_rate!r}, common_share = {self.common_share!r}: "
                             "expected shares from 0 to 1")
        if wrong or not all(isinstance(x, (int, float)) and x > 0 for x in (self.lr, self.gate_lr)):
            raise ValueError(f"{', '.join(wrong) or 'lr, gate_lr'}: counts must be whole numbers of at least 1 and "
                             "the learning rates positive")

    @classmethod
    def from_toml(cls, path: Path) -> MemoryFitConfig:
        data = tomllib.loads(path.read_text())
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**data)


Sequence = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # final hidden [T, D], the read states [T, D] (the
                                                             # same tensor where the reader reads the final ones),
                                                             # tokens [T + 1]; fp32


@torch.no_grad()      # not inference mode: the key fit computes gradients through these tensors
def hidden_states(model: RustleLM, tok: Tokenizer, crates: Crates, count: int, config: MemoryFitConfig,
                  bf16: bool = True) -> list[Sequence]:
    """Up to `count` crates packed to `config.ctx` tokens with their final hidden states and `config.layer`'s."""
    packer, out = Packer(tok, PackConfig(fim_rate=0.0)), []
    for name, files in crates:
        ids, _ = packed_crate(packer, name, files, config.ctx)
        if len(ids) < config.min_tokens:
            continue
        tokens = torch.tensor(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden, states = model.hidden_and_read(tokens[None, :-1], layer=config.layer)
        hidden = hidden[0].float()
        out.append((hidden, hidden if config.layer is None else states[0].float(), tokens))
        if len(out) == count:
            break
    return out


def _key_loss(key_hidden: torch.Tensor, key_token: torch.Tensor, log_scale: torch.Tensor, embeddings: torch.Tensor,
              sequence: Sequence, queries: torch.Tensor) -> torch.Tensor | None:
    """The vote's nats over every earlier key at `queries`, those with an earlier key of the same next token."""
    _, states, tokens = sequence
    keys = F.normalize(states @ key_hidden + embeddings[tokens[:-1]] @ key_token, dim=-1)
    return vote_nats(keys, tokens[1:], queries, log_scale.exp())


def fit_keys(model: RustleLM, train: list[Sequence], config: MemoryFitConfig,
             log: Callable[[dict], None]) -> MemoryReader:
    """The key maps and scale (step 1), with the constant reader's gate."""
    start = MemoryReader.constant(replace(model.config, memory_dim=config.dim or model.config.memory_dim))
    embeddings = model.embed.weight.detach().float()
    key_hidden = torch.nn.Parameter(start.key_hidden.clone())
    key_token = torch.nn.Parameter(torch.zeros_like(start.key_hidden))
    log_scale = torch.nn.Parameter(torch.tensor(math.log(start.scale)))
    optimizer = torch.optim.Adam([key_hidden, key_token, log_scale], lr=config.lr)
    generator, smoothed = torch.Generator().manual_seed(config.seed), None
    for step in range(config.steps):
        sequence = train[step % len(train)]
        low = min(config.min_position, len(sequence[0]) - 1)
        queries = torch.randint(low, len(sequence[0]), (config.queries,), generator=generator)
        with torch.enable_grad():
            loss = _key_loss(key_hidden, key_token, log_scale, embeddings, sequence, queries)
            if loss is None:
                continue
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        value = float(loss.detach())
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        if step % 50 == 0 or step == config.steps - 1:
            log({"stage": "keys", "step": step, "loss": smoothed, "scale": float(log_scale.detach().exp())})
    return MemoryReader(key_hidden.detach(), key_token.detach(), float(log_scale.detach().exp()),
                        start.gate, layer=config.layer, previous=config.previous).with_embeddings(embeddings)


@torch.inference_mode()
def _gate_rows(model: RustleLM, reader: MemoryReader, sequence: Sequence, positions: torch.Tensor):
    """(GATE_FEATURES [R, F], the network's p of the next token [R], the vote's [R]) at `positions`."""
    hidden, states, tokens = sequence
    memory = new_memory(reader, hidden.device)
    memory.append(states[None], tokens[None, :-1])
    votes, top = vote(memory, states[positions], positions, model.config)
    probs = torch.softmax(hidden[positions] @ model.head_weight.float().T, -1)
    nexts = tokens[1:][positions, None]
    return gate_features(probs, votes, top), probs.gather(1, nexts)[:, 0], votes.gather(1, nexts)[:, 0]


def fit_gate(model: RustleLM, reader: MemoryReader, train: list[Sequence], config: MemoryFitConfig,
             log: Callable[[dict], None]) -> MemoryReader:
    """The gate (step 2): features standardised for the fit, the scaling folded back into the weights."""
    rows = [_gate_rows(model, reader, s, torch.arange(min(config.min_position, len(s[0]) - 1), len(s[0]),
                                                      config.gate_every)) for s in train]
    features, p, v = (torch.cat(parts) for parts in zip(*rows))
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    mean[0], std[0] = 0.0, 1.0
    standard = (features - mean) / std
    gate = torch.nn.Parameter(reader.gate.clone())
    optimizer = torch.optim.Adam([gate], lr=config.gate_lr)
    for step in range(config.gate_steps):
        with torch.enable_grad():
            weight = torch.sigmoid(standard @ gate)
            loss = -((1 - weight) * p + weight * v).clamp_min(1e-30).log().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if step % 100 == 0 or step == config.gate_steps - 1:
            log({"stage": "gate", "step": step, "loss": float(loss.detach()),
                 "mean_weight": float(weight.detach().mean())})
    folded = gate.detach() / std
    folded[0] = gate.detach()[0] - (gate.detach()[1:] * mean[1:] / std[1:]).sum()
    return replace(reader, gate=folded)


@torch.inference_mode()
def memory_nats(model: RustleLM, reader: MemoryReader | None, sequences: list[Sequence], start: int) -> float:
    """Nats per token past `start` of `sequences`: the network alone (reader None) or with the memory."""
    total, count = 0.0, 0
    for hidden, states, tokens in sequences:
        positions = torch.arange(min(start, len(hidden) - 1), len(hidden))
        logits = hidden[positions] @ model.head_weight.float().T
        if reader is not None:
            states = hidden if reader.layer is None else states    # the constant reader reads the final states
            memory = new_memory(reader, hidden.device)
            memory.append(states[None], tokens[None, :-1])
            logits = torch.cat([remembered(logits[i:i + 1024], states[positions[i:i + 1024]],
                                           positions[i:i + 1024], memory, model.config)
                                for i in range(0, len(positions), 1024)])
        total += float(F.cross_entropy(logits, tokens[1:][positions], reduction="sum"))
        count += len(positions)
    return total / max(count, 1)


def training_crates(crates: Crates, config: MemoryFitConfig) -> Iterable[tuple[str, list[tuple[str, str]]]]:
    """The sample of `crates` the fit reads (every `every`-th), a seeded `anonymize_rate` share of them renamed (as
    they are read: only the crates a fit packs are parsed)."""
    crates = list(crates)
    sample = sample_crates(crates, config.every)
    if config.anonymize_rate == 0:
        return sample
    common = common_names((files for _, files in crates), config.common_share)
    rng = random.Random(f"{config.seed}:anonymize")
    return ((name, anonymize(files, common, rng) if rng.random() < config.anonymize_rate else files)
            for name, files in sample)


def fit_memory(model: RustleLM, tok: Tokenizer, train_crates: Crates, validation_crates: Crates,
               config: MemoryFitConfig, log: Callable[[dict], None] = lambda row: None,
               bf16: bool = True) -> tuple[MemoryReader, dict]:
    """The fitted reader for `model` and its report (validation nats per token: alone, constant, fitted)."""
    model.eval()
    if config.layer is not None and config.layer >= model.config.n_layers:
        raise ValueError(f"layer = {config.layer}: the model's blocks are 0 to {model.config.n_layers - 1}")
    train = hidden_states(model, tok, training_crates(train_crates, config), config.crates, config, bf16)
    if not train:
        raise ValueError(f"no training crate packs to {config.min_tokens} tokens or more: lower min_tokens")
    validation = hidden_states(model, tok, sample_crates(validation_crates, config.validation_every),
                               config.validation_crates, config, bf16)
    log({"stage": "data", "train_crates": len(train), "validation_crates": len(validation)})
    reader = fit_gate(model, fit_keys(model, train, config, log), train, config, log)
    reader = reader.bf16_rounded(model.embed.weight)           # what memory.safetensors will hold
    report = {"train_crates": len(train), "validation_crates": len(validation), "layer": reader.layer,
              "previous": reader.previous,
              "scale": reader.scale,
              "gate": [round(float(g), 4) for g in reader.gate]}
    if validation:
        alone = memory_nats(model, None, validation, config.report_from)
        constant = memory_nats(model, MemoryReader.constant(model.config), validation, config.report_from)
        fitted = memory_nats(model, reader, validation, config.report_from)
        report |= {"alone_nats": alone, "constant_nats": constant, "fitted_nats": fitted,
                   "constant_gain": 1 - constant / alone, "fitted_gain": 1 - fitted / alone}
    log({"stage": "report", **report})
    return reader, report
