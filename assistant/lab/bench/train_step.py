"""Training throughput: optimiser steps of a recipe's model on random tokens, eager or with compiled blocks.

The step is the training loop's own (`optimizer_step`); random tokens cost what real ones do.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from model.model import RustleLM

from ..train.config import TrainConfig
from ..train.loop import attend_in_training, compile_blocks, optimizer_step
from ..train.memory_loss import NextTokenLoss


@dataclass
class StepRow:
    compiled: bool
    seq_len: int
    batch_tokens: int
    first_step_s: float        # includes compiling, when compiled
    step_s: list[float]
    tokens_per_s: float        # at the median step


def time_steps(config: TrainConfig, seq_len: int, compiled: bool, steps: int) -> StepRow:
    torch.manual_seed(config.seed)
    model = RustleLM(config.model).train()
    attend_in_training(model, config.train_lql_blocks)
    if compiled:
        compile_blocks(model)
    objective = NextTokenLoss(model, compiled)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.min_lr)
    n = max(1, config.batch_tokens // seq_len)
    x, y = (torch.randint(0, config.model.vocab_size, (n, seq_len)) for _ in range(2))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        optimizer_step(objective, model, optimizer, x, y, config)
        times.append(time.perf_counter() - start)
    return StepRow(compiled, seq_len, n * seq_len, times[0], times[1:], n * seq_len / statistics.median(times[1:]))
