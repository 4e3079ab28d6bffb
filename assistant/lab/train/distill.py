"""Distill-then-Replace: turn a trained full-attention model into a hybrid, layer by layer.

1. Record every attention layer's input (after its norm) and output on corpus windows.
2. Distill, independently per layer, a replacement (gdn or swa) to reproduce that output (MSE).
3. Replace greedily, the layers that distilled best first, while validation loss stays within
   `budget` of the teacher's; compare with the uniform placement (every 4th layer kept global).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
import numpy as np
import torch
import torch.nn.functional as F

from model.config import GLOBAL_KINDS
from model.model import RustleLM, make_attention


@dataclass
class DistillConfig:
    replacement: str = "gdn"        # or "swa"
    seq_len: int = 256
    windows: int = 64               # activation windows recorded per layer
    steps: int = 200                # optimisation steps per layer
    lr: float = 1e-3
    budget: float = 0.02            # allowed relative rise of validation loss
    max_replaced: float = 0.75      # at most this share of layers replaced
    seed: int = 1234


@dataclass
class DistillReport:
    teacher_val_loss: float
    layer_errors: list[float]       # relative MSE of each layer's distilled replacement
    chosen_pattern: list[str]
    chosen_val_loss: float
    uniform_pattern: list[str]
    uniform_val_loss: float
    tried: list[dict] = field(default_factory=list)


def _windows(data: np.ndarray, seq_len: int, n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - seq_len - 1, n)
    return torch.from_numpy(np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int64))


@torch.no_grad()
def val_loss(model: RustleLM, windows: torch.Tensor) -> float:
    return float(np.mean([float(model.loss(w[None, :-1], w[None, 1:])) for w in windows]))


@torch.no_grad()
def record(model: RustleLM, windows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of each block's attention over the windows: [N, T, D] each."""
    seen: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in model.blocks]
    hooks = [block.attn.register_forward_hook(lambda m, args, out, i=i: seen[i].append((args[0], out)))
             for i, block in enumerate(model.blocks)]
    try:
        model.hidden(windows[:, :-1])
    finally:
        for h in hooks:
            h.remove()
    return [(torch.cat([a for a, _ in s]), torch.cat([b for _, b in s])) for s in seen]


def distill_layer(model: RustleLM, inputs: torch.Tensor, outputs: torch.Tensor, config: DistillConfig,
                  seed: int) -> tuple[torch.nn.Module, float]:
    """Fit a fresh `replacement` layer to one attention layer's recorded behaviour; returns it and its
    relative error (MSE / variance of the target) on the recorded windows."""
    torch.manual_seed(seed)
    student = make_attention(config.replacement, model.config)
    student.apply(RustleLM._init)
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    positions = torch.arange(inputs.shape[1])
    batch = max(1, inputs.shape[0] // 8)
    for step in range(config.steps):
        idx = torch.randint(0, inputs.shape[0], (batch,))
        loss = F.mse_loss(student(inputs[idx], positions), outputs[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # cosine decay within the layer's budget of steps
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / config.steps))
    with torch.no_grad():
        error = float(F.mse_loss(student(inputs, positions), outputs) / outputs.var())
    return student.eval(), error


def _with(model: RustleLM, layers: dict[int, torch.nn.Module], kind: str) -> RustleLM:
    hybrid = copy.deepcopy(model)
    pattern = list(hybrid.config.layer_pattern)
    for i, layer in layers.items():
        hybrid.blocks[i].attn, hybrid.blocks[i].kind = copy.deepcopy(layer), kind
        pattern[i] = kind
    hybrid.config = replace(hybrid.config, layer_pattern=tuple(pattern))
    return hybrid


def distill(teacher: RustleLM, train_tokens: np.ndarray, val_tokens: np.ndarray,
            config: DistillConfig) -> tuple[RustleLM, DistillReport]:
    if any(kind not in GLOBAL_KINDS for kind in teacher.config.layer_pattern):
        raise ValueError("the teacher must be all global attention (full/lql layers)")
    teacher.eval()
    recorded = record(teacher, _windows(train_tokens, config.seq_len, config.windows, config.seed))
    students, errors = {}, []
    for i, (inputs, outputs) in enumerate(recorded):
        students[i], error = distill_layer(teacher, inputs, outputs, config, config.seed + i)
        errors.append(error)
    val = _windows(val_tokens, config.seq_len, max(4, config.windows // 4), config.seed + 1)
    base = val_loss(teacher, val)
    limit, most = base * (1 + config.budget), int(config.max_replaced * teacher.config.n_layers)
    chosen: dict[int, torch.nn.Module] = {}
    tried = []
    current = base
    for i in sorted(range(len(errors)), key=errors.__getitem__):
        if len(chosen) >= most:
            break
        trial = _with(teacher, chosen | {i: students[i]}, config.replacement)
        loss = val_loss(trial, val)
        kept = loss <= limit
        tried.append({"layer": i, "distill_error": errors[i], "val_loss": loss, "kept": kept})
        if kept:
            chosen[i], current = students[i], loss
    hybrid = _with(teacher, chosen, config.replacement)
    n = teacher.config.n_layers
    uniform = {i: students[i] for i in range(n) if i % 4 != 3}  # 3 replaced : 1 global, the last of each four
    uniform_model = _with(teacher, uniform, config.replacement)
    report = DistillReport(base, errors, list(hybrid.config.layer_pattern), current,
                           list(uniform_model.config.layer_pattern), val_loss(uniform_model, val), tried)
    return hybrid, report
