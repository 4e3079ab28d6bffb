"""A weights-only start: the whole model, or (grafting) every block whose layer kind the recipe keeps.

Grafting is the architecture lever of an ablation at a small budget: swap a layer kind (e.g. lql for a
NoPE `full` layer) and continue a trained model, so that only the swapped blocks learn from scratch.
"""
from __future__ import annotations

from dataclasses import replace

from model.model import RustleLM


def start_weights(model: RustleLM, start: RustleLM, graft: bool, source: str) -> list[int]:
    """Load `start` into `model`; return the indices of the blocks left at their fresh initialisation."""
    if start.config == model.config:
        model.load_state_dict(start.state_dict())
        return []
    if not graft:
        raise ValueError(f"{source} holds a different model config than the recipe's (set graft = true "
                         "to continue it with other layer kinds)")
    if replace(start.config, layer_pattern=model.config.layer_pattern) != model.config:
        raise ValueError(f"{source}: grafting changes layer kinds only; the recipe changes more of the model")
    fresh = [i for i, (a, b) in enumerate(zip(start.config.layer_pattern, model.config.layer_pattern)) if a != b]
    kept = {name: t for name, t in start.state_dict().items()
            if not any(name.startswith(f"blocks.{i}.attn.") for i in fresh)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or any(not any(n.startswith(f"blocks.{i}.attn.") for i in fresh) for n in missing):
        raise ValueError(f"{source}: weights do not fit the grafted model ({unexpected[:3]} {missing[:3]})")
    return fresh
