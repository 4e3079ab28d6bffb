"""Shipping a run: its checkpoint's weights (in bf16), config and tokenizer, plus the run's record, into a model
folder.

The optimiser state stays behind (it is three times the weights); `metadata.json` records the tokens
seen so far, so `init_from` can continue the model with a short re-warm-up and keep counting.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from model.io import MEMORY, MEMORY_LOG, load_model, save_model

from .checkpoint import find_checkpoint

RECORD = ("metrics.jsonl", "loss.png", "train.log")
MAX_WEIGHTS = 64_000_000


def _keep_earlier_record(dest: Path, incoming_recipe: Path | None) -> None:
    """A model continued by another run keeps the record of the stages before it: the files of the model
    being replaced move to `stages/<its cumulative tokens>/` (the weights themselves are not kept); the
    recipe being shipped stays, even when it was already written into `dest`."""
    meta = dest / "metadata.json"
    if not meta.is_file() or not (dest / "metrics.jsonl").is_file():
        return
    stage = dest / "stages" / f"{json.loads(meta.read_text())['cumulative_tokens']}-tokens"
    stage.mkdir(parents=True, exist_ok=True)
    for path in [*(dest / name for name in (*RECORD, "metadata.json")), *dest.glob("*.toml")]:
        if path.is_file() and path.resolve() != incoming_recipe:
            shutil.move(path, stage / path.name)


def shipped_recipe(model_dir: Path) -> Path | None:
    """The recipe that produced a shipped model's current stage: the one TOML that `ship` leaves at the top
    of the folder (earlier stages' recipes live under `stages/`); None if there is not exactly one."""
    recipes = list(model_dir.glob("*.toml"))
    return recipes[0] if len(recipes) == 1 else None


def ship(run: Path, dest: Path, recipe: Path | None = None) -> dict:
    checkpoint = find_checkpoint(run)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint under {run}: train first")
    if recipe is not None and not recipe.is_file():
        raise FileNotFoundError(f"no recipe {recipe}")
    dest.mkdir(parents=True, exist_ok=True)
    _keep_earlier_record(dest, recipe.resolve() if recipe is not None else None)
    save_model(load_model(checkpoint), dest, checkpoint, dtype=torch.bfloat16)   # shipped in bf16: half the bytes
    for name in (MEMORY, MEMORY_LOG):           # fitted to the weights replaced: `rustle train-memory` fits anew
        (dest / name).unlink(missing_ok=True)
    weights = sum(f.stat().st_size for f in dest.glob("model*.safetensors"))
    if weights >= MAX_WEIGHTS:
        raise ValueError(f"{dest}: {weights / 1e6:.1f} MB of weights, over the {MAX_WEIGHTS / 1e6:.0f} MB a ship "
                         "may add")
    for name in RECORD:
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
    if recipe is not None and recipe.resolve() != (dest / recipe.name).resolve():
        shutil.copy2(recipe, dest / recipe.name)
    state = json.loads((checkpoint / "state.json").read_text())
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    metadata = {
        "cumulative_tokens": state["cumulative_tokens"],
        "run_tokens": state["tokens"],
        "planned_tokens": state["config"]["total_tokens"],
        "steps": state["step"],
        "last_validation": evals[-1] if evals else None,
    }
    (dest / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata
