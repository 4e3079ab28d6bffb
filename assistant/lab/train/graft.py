"""A weights-only start: the whole model, or (grafting) every block whose layer kind the recipe keeps, in an MLP
as wide as the recipe's or wider.

Grafting is the architecture lever of an ablation at a small budget: swap a layer kind (e.g. lql for a
NoPE `full` layer) and continue a trained model, so that only the swapped blocks learn from scratch.
Widening the MLP grows a trained model without changing what it computes: the trained hidden units are kept
and the new ones start silent (their down-projection columns zero, so they add nothing until trained). A wider
MLP adds parameters but no operations, and batch-1 decoding costs operations, not FLOPs.
A recipe may also scale lql's queries by the log of their position (`lql_log_base`) without grafting: no weight
changes shape or meaning.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from model.model import RustleLM


def _widened(name: str, old: torch.Tensor, fresh: torch.Tensor, old_hidden: int, hidden: int) -> torch.Tensor:
    """`fresh` (the wider model's initial value of `name`) holding `old`'s trained hidden units."""
    out = fresh.clone()
    if name.endswith("mlp.gate_up.weight"):      # rows: gate units, then up units
        out[:old_hidden], out[hidden:hidden + old_hidden] = old[:old_hidden], old[old_hidden:]
    elif name.endswith("mlp.down.weight"):       # columns: one per hidden unit
        out[:, :old_hidden], out[:, old_hidden:] = old, 0.0
    else:
        return old
    return out


def start_weights(model: RustleLM, start: RustleLM, graft: bool, source: str) -> list[int]:
    """Load `start` into `model`; return the indices of the blocks left at their fresh initialisation."""
    if replace(start.config, lql_log_base=model.config.lql_log_base) == model.config:   # no parameter changes
        model.load_state_dict(start.state_dict())
        return []
    if not graft:
        raise ValueError(f"{source} holds a different model config than the recipe's (set graft = true "
                         "to continue it with other layer kinds or a wider MLP)")
    old_hidden, hidden = start.config.mlp_hidden, model.config.mlp_hidden
    same = replace(start.config, layer_pattern=model.config.layer_pattern, mlp_hidden=hidden) == model.config
    if not same or old_hidden > hidden:
        raise ValueError(f"{source}: grafting changes layer kinds and widens the MLP only; the recipe changes more "
                         "of the model")
    fresh = [i for i, (a, b) in enumerate(zip(start.config.layer_pattern, model.config.layer_pattern)) if a != b]
    initial = model.state_dict()
    kept = {name: _widened(name, t, initial[name], old_hidden, hidden) for name, t in start.state_dict().items()
            if not any(name.startswith(f"blocks.{i}.attn.") for i in fresh)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or any(not any(n.startswith(f"blocks.{i}.attn.") for i in fresh) for n in missing):
        raise ValueError(f"{source}: weights do not fit the grafted model ({unexpected[:3]} {missing[:3]})")
    return fresh
