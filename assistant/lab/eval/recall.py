"""Recall at a distance on real code: copy an identifier or a passkey defined 1x-128x the sliding window back.

Each probe is real Rust from held-out files as filler, with a definition placed `distance` tokens
before the end, then a prompt that only that definition can complete:
- passkey: `const PASSKEY_<n>: u32 = <digits>;` … `let key = PASSKEY_<n>; // =` → ` <digits>`;
- identifier: `fn <rare_name>() {}` … `    <first tokens of the name>` → the rest of the name;
- line: a line of made-up names (`let zorquel = vantbrisk.mulfen(tarnplim, doxwex);`) … its first half again →
  its second half: plain copying of a span (an induction head's job), the mechanism the other two need.
- span: 256 tokens of the filler itself (real code), the filler, the same 256 tokens again; the accuracy is the
  share of the second copy's tokens that greedy top-1 predicts (the first copy's share for contrast is in
  BENCHMARKS.md): graded, so that a model that copies some of a span shows it before it copies whole lines.
- random: the span probe with 256 random token ids for the span, which nothing but its first occurrence predicts
  (a span of real code is half predictable without copying): the copying mechanism alone.
Prompts end where the definition's own tokens break (no trailing space, no half token): a prompt cut
inside a token asks for a token sequence training never shows, which measures the tokenizer, not memory.
Greedy decoding; a probe counts when the completion starts with the expected text. `token_accuracy` grades the
same probes per token (the share of the expected tokens that top-1 predicts, each given the right ones before it):
a name copied at 35% a token is whole one time in a hundred, and shows here before it shows in `accuracy`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from model.model import RustleLM

from ..train.data import COPY_TOKENS

SYLLABLES = ["zor", "quel", "vant", "brisk", "mul", "tarn", "plim", "dox", "wex", "gorb", "sul", "fen"]


@dataclass
class RecallRow:
    kind: str
    multiple: int       # distance in sliding windows
    distance: int       # tokens between the definition and the query
    accuracy: float
    probes: int
    token_accuracy: float   # per expected token, teacher-forced (the span kinds: the same as `accuracy`)


def _probe(kind: str, rng: random.Random, tok: Tokenizer) -> tuple[str, str, str]:
    """(definition line, query prompt, expected continuation)."""
    if kind == "passkey":
        n, key = rng.randrange(1000), str(rng.randrange(10_000, 100_000))
        return f"const PASSKEY_{n}: u32 = {key};\n", f"\nlet key = PASSKEY_{n}; // =", f" {key}"
    if kind == "line":
        words = ["".join(rng.choice(SYLLABLES) for _ in range(2)) for _ in range(5)]
        line = f"\nlet {words[0]} = {words[1]}.{words[2]}({words[3]}, {words[4]});"
        pieces = tok.encode(line, add_special_tokens=False).ids
        head = tok.decode(pieces[:len(pieces) // 2])
        return line[1:] + "\n", head, line[len(head):]
    name = "_".join(rng.choice(SYLLABLES) for _ in range(3)) + f"_{rng.randrange(100)}"
    pieces = tok.encode(f" {name}", add_special_tokens=False).ids  # as the definition spells it, after `fn`
    head = tok.decode(pieces[:max(1, len(pieces) // 2)]).lstrip()
    return f"pub fn {name}() {{}}\n", f"\n    {head}", name[len(head):]


SPAN = 256   # tokens of real code repeated by a "span" probe


def _span_accuracy(model: RustleLM, filler_ids: list[int], distance: int, rng: random.Random, bf16: bool,
                   span: list[int] | None = None) -> float:
    """Top-1 accuracy on the second copy of a span (of the filler, unless given) placed `distance` tokens before it."""
    if span is None:
        start = rng.randrange(0, len(filler_ids) - SPAN + 1)
        span = filler_ids[start:start + SPAN]
    gap_start = rng.randrange(0, len(filler_ids) - distance + 1)
    ids = span + filler_ids[gap_start:gap_start + distance] + span
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(torch.tensor([ids]), last=SPAN)[0]   # the positions that predict the second copy's tokens
    predicted = logits[:-1].argmax(-1)                        # but its first (nothing announces where it starts)
    return float((predicted == torch.tensor(span[1:])).float().mean())


def _answer_probe(model: RustleLM, prompt: list[int], expected: list[int], new_tokens: int,
                  bf16: bool) -> tuple[list[int], list[int]]:
    """One prefill of `prompt` serves both readings of a name probe (at 128x the window it is the whole cost):
    (the `new_tokens` greedy decoding produces; the top-1 token at each of `expected`'s positions, each given
    the right ones before it)."""
    cache = model.new_cache()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        after_prompt = model(torch.tensor([prompt]), cache, last=1)[0, -1]
        prefilled = cache.snapshot()
        greedy, logits = [], after_prompt
        for _ in range(new_tokens):
            greedy.append(int(logits.argmax()))
            logits = model(torch.tensor([greedy[-1:]]), cache)[0, -1]
        cache.restore(prefilled)
        forced = [after_prompt]
        if len(expected) > 1:             # the prompt's last position predicts expected[0], and so on
            forced.extend(model(torch.tensor([expected[:-1]]), cache)[0])
    return greedy, [int(row.argmax()) for row in forced]


@dataclass
class NameProbe:
    definition: list[int]    # the definition line's tokens, which open the prompt
    prompt: list[int]        # the definition, `distance` tokens of filler, the query
    continuation: list[int]  # the expected tokens as they follow the query
    expected: str


def name_probe(kind: str, rng: random.Random, tok: Tokenizer, filler_ids: list[int], distance: int) -> NameProbe:
    """The next probe of a passkey, identifier or line kind from `rng`, its definition `distance` tokens back."""
    definition, query, expected = _probe(kind, rng, tok)
    start = rng.randrange(0, len(filler_ids) - distance + 1)
    definition_ids = tok.encode(definition, add_special_tokens=False).ids
    prompt = definition_ids + filler_ids[start:start + distance] + tok.encode(query, add_special_tokens=False).ids
    return NameProbe(definition_ids, prompt, _continuation(tok, query, expected), expected)


def _continuation(tok: Tokenizer, query: str, expected: str) -> list[int]:
    """`expected`'s tokens as they follow `query` (the probes cut the query where the tokens break)."""
    query_ids = tok.encode(query, add_special_tokens=False).ids
    whole = tok.encode(query + expected, add_special_tokens=False).ids
    if whole[:len(query_ids)] == query_ids:
        return whole[len(query_ids):]
    return tok.encode(expected, add_special_tokens=False).ids


@torch.no_grad()
def recall(model: RustleLM, tok: Tokenizer, filler: list[str], multiples: list[int], probes: int = 20,
           kinds: tuple[str, ...] = ("passkey", "identifier"), seed: int = 0, bf16: bool = True) -> list[RecallRow]:
    model.eval()
    filler_ids = tok.encode("\n".join(filler), add_special_tokens=False).ids
    window = model.config.window
    rows = []
    for kind in kinds:
        for multiple in multiples:
            distance, hits, graded = multiple * window, 0, 0.0
            rng = random.Random(f"{seed}:{kind}:{multiple}")
            needed = max(distance, SPAN)
            if len(filler_ids) < needed:
                raise ValueError(f"filler has {len(filler_ids)} tokens; {needed} are needed: pass more files")
            for _ in range(probes):
                if kind in ("span", "random"):
                    span = ([rng.randrange(COPY_TOKENS, model.config.vocab_size) for _ in range(SPAN)]
                            if kind == "random" else None)
                    accuracy = _span_accuracy(model, filler_ids, distance, rng, bf16, span)
                    hits, graded = hits + accuracy, graded + accuracy
                    continue
                probe = name_probe(kind, rng, tok, filler_ids, distance)
                ids, continuation, expected = probe.prompt, probe.continuation, probe.expected
                new_tokens = len(tok.encode(expected, add_special_tokens=False).ids) + 1
                greedy, predicted = _answer_probe(model, ids, continuation, new_tokens, bf16)
                hits += tok.decode(greedy).startswith(expected)
                graded += sum(p == e for p, e in zip(predicted, continuation)) / len(continuation)
            rows.append(RecallRow(kind, multiple, distance, hits / probes, probes, graded / probes))
    return rows
