"""Where lql attends when it must recall a name, and what exact attention there would give.

The probes are `eval recall`'s (the same seeds: the same definitions, fillers and queries), read teacher-forced:
each row predicts one token of the name, and its answer key is the definition's position holding that token (with
shifted keys, the key that also holds the token before it, which the query has just seen). For every lql layer and
head: the mean attention on the answer key, elsewhere on the definition line and everywhere else, and how often the
answer key is the most attended, split by whether the model's top-1 is right. Probabilities are over every key (the
attention before block selection, which is the model's own below `lql_recent + 64 * lql_blocks` tokens).
`forced`: the model's top-1 on the same rows when chosen heads attend the answer key alone (the other heads over
every key). Where that is right, the readout works and the attention is what fails.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from model.layers.lql import LatentAttention
from model.model import RustleLM

from .recall import name_probe


@dataclass
class HeadAttention:
    layer: int
    head: int
    right: bool            # the rows where the model's top-1 is the expected token, or those where it is not
    rows: int
    on_answer: float       # mean attention on the answer key
    answer_on_top: float   # share of rows whose most attended key is the answer's
    on_definition: float   # elsewhere on the definition line
    elsewhere: float       # the filler and the query


@dataclass
class AttentionReport:
    kind: str
    multiple: int
    distance: int
    probes: int
    rows: int              # expected tokens that have an answer key (the definition spells them alike)
    top1: float            # the model's teacher-forced top-1 on those rows
    heads: list[HeadAttention]
    forced: dict[str, float] = field(default_factory=dict)   # "7:0,7:1" -> top-1 with those heads on the answer


def head_attention(attn: LatentAttention, x: torch.Tensor, embeds: torch.Tensor | None,
                   rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(each head's attention over every key at `rows` [h, R, T], the keys and values [T, width]) of a NoPE,
    unscaled lql layer for its input x [1, T, D] (and the token embeddings) without a cache, as model/layers/lql.py
    attends them."""
    if attn.use_rope or attn.log_base:
        raise ValueError("the attention diagnosis reads NoPE lql layers without log-scaled queries")
    z = attn.latent(x, embeds, None)
    z, width = z[0], z.shape[-1]
    q = attn.query(x[0, rows]).view(len(rows), attn.h, width).transpose(0, 1)      # [h, R, width]
    scores = q @ z.T / math.sqrt(width)
    future = torch.arange(z.shape[0], device=x.device)[None] > torch.tensor(rows, device=x.device)[:, None]
    return scores.masked_fill(future, float("-inf")).softmax(-1), z


def parse_heads(spec: str, layers: dict[int, LatentAttention]) -> dict[int, list[int]]:
    """"7:1" or "3:*,7:0" -> {layer: [heads]}, lql layers and heads only."""
    heads: dict[int, list[int]] = {}
    for part in spec.split(","):
        layer, _, head = part.partition(":")
        if not layer.isdigit() or int(layer) not in layers or not (head == "*" or head.isdigit()):
            raise ValueError(f"{part!r}: heads are LAYER:HEAD or LAYER:* of an lql layer ({sorted(layers)})")
        count = layers[int(layer)].h
        if head != "*" and int(head) >= count:
            raise ValueError(f"{part!r}: layer {layer} has {count} heads")
        heads.setdefault(int(layer), []).extend(range(count) if head == "*" else [int(head)])
    return heads


def _forward(model: RustleLM, layers: dict[int, LatentAttention], ids: list[int], answers: dict[int, int],
             forced: dict[int, list[int]]) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor | None]]]:
    """(the logits [T, vocab], each lql layer's input) of `ids`, the `forced` heads attending each answer row's
    key alone."""
    inputs: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    rows = sorted(answers)

    def hook(i: int):
        def capture(module: LatentAttention, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            inputs[i] = (args[0], args[3] if len(args) > 3 else None)     # x, and the embeddings for token keys
            if i not in forced:
                return None
            p, z = head_attention(module, *inputs[i], rows)
            keys = torch.tensor([answers[r] for r in rows])
            for h in forced[i]:
                p[h] = 0
                p[h, torch.arange(len(rows)), keys] = 1
            output = output.clone()
            output[0, rows] = module.up((p @ z).transpose(0, 1).reshape(len(rows), -1))
            return output
        return capture

    handles = [attn.register_forward_hook(hook(i)) for i, attn in layers.items()]
    try:
        return model(torch.tensor([ids]))[0], inputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def recall_attention(model: RustleLM, tok: Tokenizer, filler: list[str], multiple: int, probes: int = 40,
                     kind: str = "identifier", force: tuple[str, ...] = (), seed: int = 0) -> AttentionReport:
    model.eval()
    layers = {i: block.attn for i, block in enumerate(model.blocks) if block.kind == "lql"}
    if not layers:
        raise ValueError("the model has no lql layer")
    forced = {spec: parse_heads(spec, layers) for spec in force}
    filler_ids = tok.encode("\n".join(filler), add_special_tokens=False).ids
    distance = multiple * model.config.window
    if len(filler_ids) < distance:
        raise ValueError(f"filler has {len(filler_ids)} tokens; {distance} are needed: pass more files")
    rng = random.Random(f"{seed}:{kind}:{multiple}")          # eval recall's probes
    sums: dict[tuple[int, int, bool], list[float]] = {}
    right_rows, forced_right, total = 0, dict.fromkeys(force, 0), 0
    for _ in range(probes):
        probe = name_probe(kind, rng, tok, filler_ids, distance)
        ids, first = probe.prompt + probe.continuation, len(probe.prompt) - 1
        answers = {first + k: probe.definition.index(token) for k, token in enumerate(probe.continuation)
                   if token in probe.definition}
        if not answers:
            continue
        rows = sorted(answers)
        logits, inputs = _forward(model, layers, ids, answers, {})
        right = [int(logits[r].argmax()) == ids[r + 1] for r in rows]
        total, right_rows = total + len(rows), right_rows + sum(right)
        for i, attn in layers.items():
            p = head_attention(attn, *inputs[i], rows)[0]
            for k, r in enumerate(rows):
                answer = answers[r]
                for h in range(attn.h):
                    on_answer, line = float(p[h, k, answer]), float(p[h, k, :len(probe.definition)].sum())
                    row = sums.setdefault((i, h, right[k]), [0, 0.0, 0.0, 0.0])
                    row[0] += 1
                    row[1] += on_answer
                    row[2] += int(p[h, k].argmax()) == answer
                    row[3] += line - on_answer
        for spec, heads in forced.items():
            logits = _forward(model, layers, ids, answers, heads)[0]
            forced_right[spec] += sum(int(logits[r].argmax()) == ids[r + 1] for r in rows)
    heads = [HeadAttention(i, h, good, int(n), on / n, top / n, line / n, 1 - (on + line) / n)
             for (i, h, good), (n, on, top, line) in sorted(sums.items())]
    return AttentionReport(kind, multiple, distance, probes, total, right_rows / max(1, total), heads,
                           {spec: hits / max(1, total) for spec, hits in forced_right.items()})
