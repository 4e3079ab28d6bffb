"""Multi-query associative recall (MQAR, Arora et al. 2023) at a distance: can a pattern copy across 4× its window?

A sequence holds `pairs` key-value pairs, then `gap` noise tokens, then queries: each query is a key
seen at the start, and the model must answer its value. Loss and accuracy count answers only. With
gap = 4 × window no stack of two sliding-window layers can see the pairs from the queries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.model import RustleLM


@dataclass(frozen=True)
class RecallTask:
    keys: int = 16
    values: int = 16
    noise: int = 8
    pairs: int = 4
    queries: int = 4
    window: int = 8
    gap_windows: int = 4

    @property
    def vocab(self) -> int:
        return self.keys + self.values + self.noise

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, T] and targets [B, T] (-100 except where an answer is due)."""
        keys = torch.stack([torch.randperm(self.keys, generator=generator)[:self.pairs] for _ in range(size)])
        values = self.keys + torch.randint(0, self.values, (size, self.pairs), generator=generator)
        # distinct queries: a repeated key could be answered by copying an answer inside the window
        pick = torch.stack([torch.randperm(self.pairs, generator=generator)[:self.queries] for _ in range(size)])
        asked, answers = keys.gather(1, pick), values.gather(1, pick)
        noise = self.keys + self.values + torch.randint(0, self.noise, (size, self.gap_windows * self.window),
                                                        generator=generator)
        tokens = torch.cat([torch.stack([keys, values], 2).flatten(1), noise,
                            torch.stack([asked, answers], 2).flatten(1)], dim=1)
        targets = torch.full_like(tokens, -100)
        first_query = 2 * self.pairs + noise.shape[1]
        targets[:, first_query:-1:2] = answers  # at each query position, predict its answer
        return tokens, targets


def train_and_score(pattern: tuple[str, ...], task: RecallTask, seconds: float, seed: int = 0,
                    batch_size: int = 64, longer_gap_windows: int = 12,
                    max_steps: int | None = None) -> tuple[float, float, int]:
    """Train a tiny model for `seconds` (or `max_steps`, whichever ends first); returns (answer accuracy on fresh
    sequences, the same with the pairs `longer_gap_windows` windows back, beyond every length seen in training; steps
    taken)."""
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=task.vocab, d_model=64, n_heads=2, n_kv_heads=1, head_dim=32, mlp_hidden=128,
                         layer_pattern=pattern, window=task.window, gdn_heads=2, gdn_head_dim=32, chunk_size=32,
                         lql_dim=32, lql_heads=2)
    model = RustleLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    steps, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and (max_steps is None or steps < max_steps):
        tokens, targets = task.batch(batch_size, generator)
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), targets[:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    longer = replace(task, gap_windows=longer_gap_windows)
    return _accuracy(model, task, seed), _accuracy(model, longer, seed), steps


@torch.no_grad()
def _accuracy(model: RustleLM, task: RecallTask, seed: int) -> float:
    tokens, targets = task.batch(512, torch.Generator().manual_seed(seed + 1))
    predicted = model(tokens[:, :-1]).argmax(-1)
    due = targets[:, 1:] != -100
    return float((predicted[due] == targets[:, 1:][due]).float().mean())
