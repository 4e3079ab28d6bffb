"""Checkpoints: model + optimiser state + run state, all safetensors/JSON, replaced atomically as a folder."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.io import load_model, save_model
from model.model import RustleLM


@dataclass
class RunState:
    step: int = 0
    tokens: int = 0               # tokens trained in this run
    cumulative_tokens: int = 0    # including every run this model continued from
    best_val_loss: float = float("inf")


def save_checkpoint(out: Path, model: RustleLM, optimizer: torch.optim.Optimizer, state: RunState,
                    tokenizer: Path, extra: dict) -> Path:
    """Write out/checkpoint-new, then swap it in: a kill at any moment leaves a whole checkpoint behind."""
    new, current, old = out / "checkpoint-new", out / "checkpoint", out / "checkpoint-old"
    shutil.rmtree(new, ignore_errors=True)
    save_model(model, new, tokenizer)
    names = {id(p): n for n, p in model.named_parameters()}
    tensors, steps = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st:
                tensors[f"{names[id(p)]}.exp_avg"] = st["exp_avg"].contiguous()
                tensors[f"{names[id(p)]}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
                steps[names[id(p)]] = float(st["step"])
    save_file(tensors, str(new / "optimizer.safetensors"))
    (new / "state.json").write_text(json.dumps({**asdict(state), "optimizer_steps": steps, **extra}, indent=2) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        current.rename(old)
    new.rename(current)
    shutil.rmtree(old, ignore_errors=True)
    return current


def find_checkpoint(out: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint-old"):  # -old survives a kill between the two renames
        if (out / name / "state.json").is_file():
            return out / name
    return None


def load_checkpoint(path: Path, model: RustleLM, optimizer: torch.optim.Optimizer) -> RunState:
    model.load_state_dict(load_model(path).state_dict())
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    for name, p in model.named_parameters():
        if f"{name}.exp_avg" in tensors:
            optimizer.state[p] = {"step": torch.tensor(meta["optimizer_steps"][name]),
                                  "exp_avg": tensors[f"{name}.exp_avg"], "exp_avg_sq": tensors[f"{name}.exp_avg_sq"]}
    known = RunState.__dataclass_fields__
    return RunState(**{k: v for k, v in meta.items() if k in known})
