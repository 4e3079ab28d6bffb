"""The five-way comparison: one recipe trained with five layer mixes at equal parameters and tokens.

Every variant sees the same batches (same seed, same token files) and is scored the same way:
bits/byte on held-out files, recall at 4x/16x the sliding window, decode ms/token at 8K and 32K and
cache bytes at 32K (cache filled directly, as in `bench model`).
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from model.model import count_parameters, equal_parameter_variant
from tokenizer import load_tokenizer

from ..eval.ppl import perplexity
from ..eval.recall import recall
from ..train.config import TrainConfig
from ..train.data import prepare_tokens
from ..train.loop import train
from .model import measure

# name -> (repeating unit of the layer pattern, RoPE in global layers)
VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "full (twin)": (("full",), True),
    "lql hybrid": (("swa", "lql"), False),
    "swa only": (("swa",), False),
    "gdn only": (("gdn",), False),
    "default mix": (("gdn", "swa", "gdn", "lql"), False),
}


@dataclass
class CompareRow:
    variant: str
    layers: list[str]
    parameters: int
    tokens: int
    train_seconds: float
    bits_per_byte: float
    recall_4x: float
    recall_16x: float
    decode_ms_8k: float
    decode_ms_32k: float
    cache_bytes_32k: int


def variant_recipe(base: TrainConfig, name: str, out: Path) -> TrainConfig:
    unit, rope = VARIANTS[name]
    n = base.model.n_layers
    if n % len(unit):
        raise ValueError(f"{n} layers cannot repeat the unit {unit} of '{name}': use a multiple of 4 layers")
    model = equal_parameter_variant(base.model, unit * (n // len(unit)), rope)
    return replace(base, model=model, out=out / name.replace(" ", "-").replace("(", "").replace(")", ""))


def compare(base: TrainConfig, out: Path, held_out: list[str], names: list[str] | None = None,
            on_row: Callable[[CompareRow], None] = lambda r: None) -> list[CompareRow]:
    tok = load_tokenizer(base.tokenizer)
    shared_tokens = out / "tokens"
    prepare_tokens(shared_tokens, base.corpus, base.tokenizer, base.pack)
    rows = []
    for name in names or list(VARIANTS):
        recipe = variant_recipe(base, name, out)
        recipe.out.mkdir(parents=True, exist_ok=True)
        if not (recipe.out / "tokens").exists():
            (recipe.out / "tokens").symlink_to(shared_tokens.resolve(), target_is_directory=True)
        started = time.monotonic()
        state, model = train(recipe, resume=False)
        seconds = time.monotonic() - started
        model.eval()
        ppl = perplexity(model, tok, held_out, context=max(n for _, n in recipe.seq_schedule))
        probes = recall(model, tok, held_out, [4, 16], probes=10)  # passkey and identifier, averaged
        hits = {m: statistics.mean(r.accuracy for r in probes if r.multiple == m) for m in (4, 16)}
        fast = model.to(torch.bfloat16)
        at_8k, at_32k = (measure(fast, name, n, prefill_limit=0, decode_steps=16) for n in (8192, 32768))
        row = CompareRow(name, list(recipe.model.layer_pattern), count_parameters(recipe.model), state.tokens,
                         seconds, ppl.bits_per_byte, hits[4], hits[16], at_8k.decode_ms_per_token,
                         at_32k.decode_ms_per_token, at_32k.cache_bytes)
        (recipe.out / "compare.json").write_text(json.dumps(asdict(row)) + "\n")
        rows.append(row)
        on_row(row)
    return rows
