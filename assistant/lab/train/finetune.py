"""`rustle finetune`: continue a model on a team's repositories, with held-out files and early stopping.

The team's files are split by file (not by crate: one repository is often one crate); the held-out
files are scored before and after, and the best weights by held-out loss become the new model folder. The base's
fitted memory reader comes along: a reader fitted to a base reads weights continued from it (BENCHMARKS.md, "Fine-tuning
on the repository as a command": stage44far recalls more with stage 15's reader than with its own fit).
"""
from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from model import DEFAULT_MODEL
from model.io import MEMORY, MEMORY_LOG, load_model, save_model
from tokenizer import load_tokenizer, tokenizer_folder

from ..corpus.build import BuildConfig, build
from ..corpus.shards import texts
from ..corpus.split import SplitConfig
from ..eval.ppl import perplexity
from .config import TrainConfig
from .data import PackConfig, load_tokens, prepare_tokens
from .loop import tokens_behind, train


@dataclass
class FinetuneConfig:
    repos: list[Path]
    out: Path
    model: Path = DEFAULT_MODEL
    tokens: int = 2_000_000         # the budget at most
    epochs: float = 3.0             # passes over the training files' tokens, `tokens` at most
    lr: float = 3e-4
    batch_tokens: int = 4096        # one 4K window a step, as in BENCHMARKS' measure on the dev repositories
    seq_len: int = 4096
    held_out: float = 0.1
    eval_every_tokens: int = 100_000
    patience: int = 3
    seed: int = 1234
    pack: PackConfig = field(default_factory=PackConfig)


@dataclass
class FinetuneReport:
    bits_per_byte_before: float
    bits_per_byte_after: float
    held_out_files: int
    tokens: int
    tuned: bool              # the model folder holds the fine-tuned weights (else the base's)
    model: str


def finetune(config: FinetuneConfig, on_log: Callable[[dict], None] = lambda row: None) -> FinetuneReport:
    corpus = config.out / "corpus"
    build(BuildConfig(out=corpus, repos=config.repos,
                      split=SplitConfig(seed=config.seed, validation=config.held_out, test=0.0, unit="file")))
    held_out = list(texts(corpus, "validation"))
    if not held_out or not list(texts(corpus, "train")):
        raise ValueError(f"too few .rs files in {', '.join(map(str, config.repos))} to hold some out")
    tokenizer_dir = tokenizer_folder(config.model)
    tok = load_tokenizer(tokenizer_dir)
    base = load_model(config.model)
    before = perplexity(base, tok, held_out, context=config.seq_len).bits_per_byte

    out, pack = config.out / "run", replace(config.pack, seed=config.seed)
    # the train loop finds these token files made with the same settings and reuses them
    train_tokens = len(load_tokens(prepare_tokens(out / "tokens", corpus, tokenizer_dir, pack)["train"]))
    total = min(config.tokens, max(config.batch_tokens, math.ceil(config.epochs * train_tokens)))
    run = TrainConfig(out=out, corpus=corpus, tokenizer=tokenizer_dir,
                      model=base.config, pack=pack, total_tokens=total,
                      batch_tokens=config.batch_tokens, seq_schedule=[(0.0, config.seq_len)], lr=config.lr,
                      min_lr=config.lr / 10, warmup_tokens=max(1, total // 50),
                      eval_every_tokens=config.eval_every_tokens, eval_tokens=config.batch_tokens,
                      checkpoint_every_seconds=float("inf"), init_from=config.model, patience=config.patience,
                      seed=config.seed)
    state, _ = train(run, on_log=on_log)
    best = load_model(run.out / "best") if (run.out / "best").is_dir() else base
    after = perplexity(best, tok, held_out, context=config.seq_len).bits_per_byte
    model_dir = config.out / "model"
    tuned = after < before   # else fine-tuning did not help on held-out files: the new folder holds the base weights
    save_model(best if tuned else base, model_dir, run.tokenizer)
    for name in (MEMORY, MEMORY_LOG):
        if (config.model / name).is_file():
            shutil.copy2(config.model / name, model_dir / name)
    cumulative = tokens_behind(config.model)
    (model_dir / "metadata.json").write_text(json.dumps({
        "cumulative_tokens": cumulative + state.tokens, "finetuned_from": str(config.model),
        "bits_per_byte_before": before, "bits_per_byte_after": min(before, after)}, indent=2) + "\n")
    return FinetuneReport(before, after, len(held_out), state.tokens, tuned, str(model_dir))
