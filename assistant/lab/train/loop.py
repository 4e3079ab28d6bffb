"""The training loop: random windows of the token file, bf16 autocast, AdamW, warm-up + cosine, clipping.

Batches are a pure function of (seed, step, rank), so a run resumed from a checkpoint sees exactly
the batches the uninterrupted run would have seen. Under torchrun every rank draws its own windows
and DDP averages gradients; rank 0 alone writes logs and checkpoints.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from model.config import ModelConfig
from model.io import load_model, save_model
from model.model import RustleLM
from tokenizer import load_tokenizer

from .checkpoint import RunState, find_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import load_tokens, prepare_tokens
from .graft import new_weights, start_weights
from .memory_loss import training_objective
from .token_weights import token_weighing

REWARM_FRACTION = 0.02  # a weights-only start warms up again over this share of the run
BUDGET_STEPS = (3, 13)  # max_seconds: throughput is measured between these steps of the run (compiling is before)
BUDGET_SPARE = 0.9      # and this share of the time left goes to steps (evaluations and checkpoints take the rest)


def compile_blocks(model: RustleLM) -> None:
    """torch.compile each block in place, so parameter names (checkpoints, DDP) are unchanged; see BENCHMARKS."""
    for block in model.blocks:
        block.compile()


class NewWeightScale:
    """Steps a grafted model's new weights `scale` times as far as AdamW stepped them (graft.new_weights' masks)."""

    def __init__(self, model: RustleLM, masks: dict[str, torch.Tensor], scale: float) -> None:
        named = dict(model.named_parameters())
        self.pairs = [(named[name], mask.to(named[name].device)) for name, mask in masks.items()]
        self.scale, self.before = scale, []

    def __enter__(self) -> "NewWeightScale":
        self.before = [p.detach().clone() for p, _ in self.pairs]
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for (p, mask), old in zip(self.pairs, self.before):
                p.add_((p - old) * mask, alpha=self.scale - 1.0)
        self.before = []


def optimizer_step(objective: torch.nn.Module, model: RustleLM, optimizer: torch.optim.Optimizer,
                   x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                   scale: NewWeightScale | None = None) -> tuple[torch.Tensor, float]:
    """One step: bf16-autocast loss, backward, gradient clipping, AdamW (its step scaled up on new weights).
    Returns (loss, gradient norm)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        loss = objective(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
    value = float(loss.detach())
    if not (math.isfinite(grad_norm) and math.isfinite(value)):   # one such step ruins the weights
        raise FloatingPointError(
            f"the loss ({value}) or its gradient norm ({grad_norm}) is not a finite number; the step "
            "was not taken and the run's last checkpoint is as it was. Where bf16 is the cause (BENCHMARKS.md, "
            "Training throughput, has a case), `rustle train --fp32` trains in fp32")
    with scale or contextlib.nullcontext():
        optimizer.step()
    return loss, grad_norm


def drop_rows_after(path: Path, step: int) -> None:
    """Forget logged steps past the checkpoint being resumed (a killed run logged them, the resumed one redoes
    them), and a last row the kill tore in half."""
    if not path.is_file():
        return
    kept = []
    for row in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(row)["step"] <= step:
                kept.append(row)
        except (ValueError, KeyError):
            continue
    path.write_text("".join(kept))


def warmup_of(config: TrainConfig) -> int:
    """Tokens of linear warmup: the recipe's, or for a weights-only start (no optimiser state) a share of the run
    as it stands, so that a total cut by a time budget warms up over a share of the cut run. A share under one step
    is none: a run of a few steps (a small repository's fine-tune) would take its first at a small part of its lr."""
    if config.init_from is None:
        return config.warmup_tokens
    share = int(REWARM_FRACTION * config.total_tokens)
    return share if share >= config.batch_tokens else 0


def lr_at(config: TrainConfig, tokens: int) -> float:
    warmup = warmup_of(config)
    if tokens < warmup:
        return config.lr * (tokens + 1) / warmup
    progress = min(1.0, (tokens - warmup) / max(1, config.total_tokens - warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def fit_budget(config: TrainConfig, tokens: int, tokens_per_s: float, seconds_left: float) -> TrainConfig:
    """`config` with total_tokens cut to what `tokens_per_s` reaches in `seconds_left` (whole batches)."""
    steps = int(BUDGET_SPARE * tokens_per_s * max(0.0, seconds_left)) // config.batch_tokens
    reach = tokens + steps * config.batch_tokens
    return replace(config, total_tokens=min(config.total_tokens, max(tokens + config.batch_tokens, reach)))


def keep_budget_cut(config: TrainConfig, checkpoint: Path) -> TrainConfig:
    """`config` with the token total that the resumed run's time budget cut, where one did: the learning-rate
    schedule depends on the total, so a resumed run must not stretch it back (a new budget may still cut it)."""
    recorded = json.loads((checkpoint / "state.json").read_text()).get("config", {})
    if recorded.get("max_seconds") is None or recorded.get("total_tokens", config.total_tokens) >= config.total_tokens:
        return config
    return replace(config, total_tokens=recorded["total_tokens"])


def starting_model(config: TrainConfig) -> tuple[RustleLM, list[int]]:
    """The run's model before its first step, on the CPU, attending as in training: fresh, or `init_from`'s
    weights (and the indices of the blocks that start fresh, where grafted)."""
    model = RustleLM(config.model)
    attend_in_training(model, config.train_lql_blocks)
    if config.init_from is None:
        return model, []
    return model, start_weights(model, load_model(config.init_from), config.graft, f"{config.init_from}")


def tokens_behind(model_dir: Path) -> int:
    """The tokens a model has been trained on: a shipped folder's metadata.json, or a run's checkpoint/state.json."""
    for name in ("metadata.json", "state.json"):
        if (model_dir / name).is_file():
            return json.loads((model_dir / name).read_text()).get("cumulative_tokens", 0)
    return 0


def attend_in_training(model: RustleLM, blocks: int | None) -> None:
    """lql queries attend to `blocks` selected blocks (0: every key; None: the model's own) while training; the
    config keeps the served number. On a CPU a 16K window's step takes seconds attending to every key, minutes
    gathering each query's selected ones."""
    if blocks is None:
        return
    for block in model.blocks:
        if block.kind == "lql":
            block.attn.blocks = blocks


def run_record(config: TrainConfig, fresh: list[int]) -> dict:
    """What a checkpoint records of its run beside the weights: the config (as cut by a time budget)."""
    return {"config": json.loads(json.dumps(asdict(config), default=str))} | ({"fresh_blocks": fresh} if fresh else {})


def batch(data: np.ndarray, seq_len: int, n: int, seed: int, step: int, rank: int) -> tuple[torch.Tensor, ...]:
    seq_len = min(seq_len, len(data) - 2)  # a small fine-tuning set may be shorter than one window
    rng = np.random.default_rng([seed, step, rank])
    starts = rng.integers(0, len(data) - seq_len - 1, n)
    windows = torch.from_numpy(np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate(model: RustleLM, data: np.ndarray, seq_len: int, n_tokens: int, bf16: bool,
             bytes_per_token: float) -> dict:
    """Mean loss (nats/token) on fixed, evenly spaced windows of the validation tokens, and bits per byte."""
    model.eval()
    seq_len = min(seq_len, len(data) - 1)
    n = max(1, n_tokens // seq_len)
    starts = np.linspace(0, len(data) - seq_len - 1, n).astype(np.int64)
    losses = []
    for s in starts:
        window = torch.from_numpy(data[s:s + seq_len + 1].astype(np.int64))[None].to(model.embed.weight.device)
        with torch.autocast(window.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(window[:, :-1])
        losses.append(float(F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten())))
    model.train()
    loss = float(np.mean(losses))
    return {"val_loss": loss, "val_bits_per_byte": loss / math.log(2) / bytes_per_token}


def bytes_per_token(data: np.ndarray, tokenizer: Path, sample: int = 1 << 20) -> float:
    tok = load_tokenizer(tokenizer)
    ids = data[:sample].tolist()
    return len(tok.decode(ids, skip_special_tokens=True).encode()) / len(ids)


def train(config: TrainConfig, resume: bool = False, on_log: Callable[[dict], None] = lambda m: None,
          max_steps: int | None = None) -> tuple[RunState, RustleLM]:
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if world > 1 and (config.patience is not None or config.max_seconds is not None):
        raise ValueError("early stopping (patience) and a time budget (max_seconds) run in one process: rank 0 "
                         "alone sees the validation loss and the clock")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(config.seed)
    config.out.mkdir(parents=True, exist_ok=True)
    folder = config.out / "tokens"
    if rank == 0:  # tokenizes once; afterwards every rank finds the files and only maps them
        prepare_tokens(folder, config.corpus, config.tokenizer, config.pack)
    if world > 1:
        dist.barrier()
    paths = prepare_tokens(folder, config.corpus, config.tokenizer, config.pack)
    train_data, val_data = load_tokens(paths["train"]), load_tokens(paths["validation"])
    val_bytes_per_token = bytes_per_token(val_data, config.tokenizer)

    model, fresh = starting_model(config)
    state = RunState()
    if config.init_from is not None:
        state.cumulative_tokens = tokens_behind(config.init_from)
    model.to(config.device)
    scale = None
    if config.new_weight_lr_scale != 1.0 and config.init_from is not None:
        masks = new_weights(model, ModelConfig.load(Path(config.init_from) / "config.json"))
        scale = NewWeightScale(model, masks, config.new_weight_lr_scale) if masks else None
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    checkpoint = find_checkpoint(config.out) if resume else None
    if checkpoint is not None:
        state, config = load_checkpoint(checkpoint, model, optimizer), keep_budget_cut(config, checkpoint)
    elif resume:
        raise FileNotFoundError(f"--resume: no checkpoint under {config.out}")
    if config.compile:
        compile_blocks(model)
    weighing = token_weighing(config.tokenizer, config.name_weight, config.far_repeat_weight, config.model.window,
                              config.far_repeat_from)
    objective = training_objective(model, config.compile, config.memory_loss, config.memory_queries,
                                   config.init_from, weighing)
    ddp = torch.nn.parallel.DistributedDataParallel(objective) if world > 1 else objective

    if rank == 0 and checkpoint is not None:
        drop_rows_after(config.out / "metrics.jsonl", state.step)
    metrics = (config.out / "metrics.jsonl").open("a") if rank == 0 else None
    last_save, last_eval_tokens = time.monotonic(), state.tokens
    started, tokens_at_start, step_at_start = time.monotonic(), state.tokens, state.step
    budget_mark = (started, state.tokens)
    evals_without_gain = 0
    model.train()
    while state.tokens < config.total_tokens and (max_steps is None or state.step < max_steps):
        seq_len = config.seq_len(state.tokens)
        n_seqs = max(1, config.batch_tokens // seq_len // world)
        x, y = (t.to(config.device) for t in batch(train_data, seq_len, n_seqs, config.seed, state.step, rank))
        lr = lr_at(config, state.tokens)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, grad_norm = optimizer_step(ddp, model, optimizer, x, y, config, scale)
        step_tokens = n_seqs * seq_len * world
        state.step, state.tokens = state.step + 1, state.tokens + step_tokens
        state.cumulative_tokens += step_tokens
        if rank != 0:
            continue
        if config.max_seconds is not None and state.step - step_at_start in BUDGET_STEPS:
            now = time.monotonic()
            if state.step - step_at_start == BUDGET_STEPS[1]:
                rate = (state.tokens - budget_mark[1]) / (now - budget_mark[0])
                config = fit_budget(config, state.tokens, rate, started + config.max_seconds - now)
            budget_mark = (now, state.tokens)
        row = {"step": state.step, "tokens": state.tokens, "loss": float(loss.detach()), "lr": lr,
               "grad_norm": grad_norm, "seq_len": seq_len,
               "tokens_per_s": (state.tokens - tokens_at_start) / (time.monotonic() - started),
               "total_tokens": config.total_tokens} | objective.logged
        if state.tokens - last_eval_tokens >= config.eval_every_tokens or state.tokens >= config.total_tokens:
            row |= evaluate(model, val_data, seq_len, config.eval_tokens, config.bf16, val_bytes_per_token)
            last_eval_tokens = state.tokens
            if row["val_loss"] < state.best_val_loss:
                state.best_val_loss, evals_without_gain = row["val_loss"], 0
                if config.patience is not None:
                    save_model(model, config.out / "best", config.tokenizer)
            else:
                evals_without_gain += 1
                row["early_stop"] = config.patience is not None and evals_without_gain >= config.patience
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        on_log(row)
        if row.get("early_stop"):
            break
        if time.monotonic() - last_save >= config.checkpoint_every_seconds:
            save_checkpoint(config.out, model, optimizer, state, config.tokenizer, run_record(config, fresh))
            last_save = time.monotonic()
    if rank == 0:
        save_checkpoint(config.out, model, optimizer, state, config.tokenizer, run_record(config, fresh))
        metrics.close()
    if world > 1:
        dist.barrier()
    return state, model
