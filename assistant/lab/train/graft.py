"""A weights-only start: the whole model, or (grafting) every block whose layer kind the recipe keeps, in an MLP,
an lql and a residual stream as wide as the recipe's or wider.

Grafting is the architecture lever of an ablation at a small budget: swap a layer kind (e.g. lql for a
NoPE `full` layer) and continue a trained model, so that only the swapped blocks learn from scratch.
Widening the MLP grows a trained model without changing what it computes: the trained hidden units are kept
and the new ones start silent (their down-projection columns zero, so they add nothing until trained). A wider
MLP adds parameters but no operations, and batch-1 decoding costs operations, not FLOPs.
Widening lql (a wider latent, more heads) keeps what it computes the same way: the trained latent dimensions and
heads are kept (queries rescaled for the wider softmax scale), the new query and output weights start at zero, and
the new latent dimensions get a fresh down-projection so that they have something to learn from. Shifting lql's keys
(`lql_shift`: [z_t, z_t-1]) widens them the same way: the previous position's half starts unread, and with token keys
(`lql_token_key`) a fresh projection of the embeddings is new too (`new_weights` marks what is new).
Widening the residual stream (`d_model`) grows a trained model the same way: the new dimensions start at zero in
every token's stream and stay there (the embedding's new columns and the rows that blocks write into them are zero),
the weights that read the stream get fresh columns for them (so that they have gradients to learn from), and each
norm over the stream has its trained weights scaled by sqrt(old / new width): the zeros lower the mean square by
that factor, so the normalised values, and so the logits, are what the narrow model computed.
A recipe may also scale lql's queries by the log of their position (`lql_log_base`) or set the model's memory (an
inference setting) without grafting: no weight changes shape or meaning.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from model.config import ModelConfig
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


def _widened_lql(name: str, old: torch.Tensor, fresh: torch.Tensor, old_shape: tuple[int, int],
                 shape: tuple[int, int]) -> torch.Tensor:
    """`fresh` (a wider lql's initial `name`) holding `old`'s trained latent dims and heads; shapes are (heads, key
    width): a shifted lql's keys are twice its latent, the previous position's half last (token keys: three times,
    the embeddings' thirds last)."""
    (h0, d0), (h, d) = old_shape, shape
    if name.endswith("attn.down.weight"):        # rows: latent dims; the new ones keep their fresh values
        out = fresh.clone()
        out[:old.shape[0]] = old
        return out
    if name.endswith("attn.query.weight"):       # rows: head-major latent dims; SDPA scales scores by 1/sqrt(d)
        out = torch.zeros_like(fresh).view(h, d, -1)
        out[:h0, :d0] = old.view(h0, d0, -1) * math.sqrt(d / d0)
        return out.view_as(fresh)
    out = torch.zeros_like(fresh).view(fresh.shape[0], h, d)    # up: columns, head-major latent dims
    out[:, :h0, :d0] = old.view(old.shape[0], h0, d0)
    return out.view_as(fresh)


# Weights that read the residual stream (its dims are their columns), write it (its dims are their rows) or normalise it
READS = ("attn.qkv.weight", "attn.beta_decay.weight", "attn.gate.weight", "attn.down.weight", "attn.query.weight",
         "attn.token_down.weight", "mlp.gate_up.weight", "head.weight")
WRITES = ("attn.out.weight", "attn.up.weight", "mlp.down.weight")
NORMS = ("attn_norm.weight", "mlp_norm.weight")


def _grown_stream(name: str, old: torch.Tensor, fresh: torch.Tensor, start: ModelConfig,
                  config: ModelConfig) -> torch.Tensor:
    """`fresh` (a model with a wider residual stream's initial `name`) holding `old`, itself widened in its block's
    own dims (`_widened_block`): new stream dims read with fresh weights, written with zeros, normalised at the
    trained scale."""
    d0, d = start.d_model, config.d_model
    short = name.split(".", 2)[-1] if name.startswith("blocks.") else name
    if short in READS:
        out = fresh.clone()
        out[:, :d0] = _widened_block(name, old, fresh[:, :d0], start, config)
    elif short in WRITES:
        out = torch.zeros_like(fresh)
        out[:d0] = _widened_block(name, old, fresh[:d0], start, config)
    elif name == "embed.weight":                 # the stream's start: a token writes nothing into the new dims
        out = torch.zeros_like(fresh)
        out[:, :d0] = old
    elif short in NORMS or name == "norm.weight":
        out = fresh * math.sqrt(d0 / d)
        out[:d0] = old * math.sqrt(d0 / d)
    else:                                        # inside a block: gdn's decays, convolution and head norm
        return _widened_block(name, old, fresh, start, config)
    return out


def _widened_block(name: str, old: torch.Tensor, fresh: torch.Tensor, start: ModelConfig,
                   config: ModelConfig) -> torch.Tensor:
    kind = config.layer_pattern[int(name.split(".")[1])] if name.startswith("blocks.") else None
    if kind == "lql" and ".attn." in name:
        widths = [c.lql_width for c in (start, config)]
        return _widened_lql(name, old, fresh, (start.lql_heads, widths[0]), (config.lql_heads, widths[1]))
    return _widened(name, old, fresh, start.mlp_hidden, config.mlp_hidden)


def new_weights(model: RustleLM, start: ModelConfig) -> dict[str, torch.Tensor]:
    """Where a model grafted from a `start` config holds weights that were not trained: each such parameter's mask
    (True: new), from the widening itself (ones widened into zeros stay zero where new)."""
    fresh = {i for i, (a, b) in enumerate(zip(start.layer_pattern, model.config.layer_pattern)) if a != b}
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in RustleLM(start).state_dict().items()}
    masks = {}
    for name, p in model.named_parameters():
        if name not in shapes or any(name.startswith(f"blocks.{i}.attn.") for i in fresh):
            masks[name] = torch.ones_like(p, dtype=torch.bool)
        elif shapes[name] != p.shape:
            ones = torch.ones(shapes[name])
            masks[name] = _grown_stream(name, ones, torch.zeros(p.shape), start, model.config) == 0
    return masks


def _serving_as(start: ModelConfig, recipe: ModelConfig) -> ModelConfig:
    """`start` with the recipe's settings that change no weight: lql's query scale and the memory (inference only)."""
    return replace(start, lql_log_base=recipe.lql_log_base, memory_weight=recipe.memory_weight,
                   memory_k=recipe.memory_k, memory_scale=recipe.memory_scale, memory_dim=recipe.memory_dim)


def start_weights(model: RustleLM, start: RustleLM, graft: bool, source: str) -> list[int]:
    """Load `start` into `model`; return the indices of the blocks left at their fresh initialisation."""
    if _serving_as(start.config, model.config) == model.config:                          # no parameter changes
        model.load_state_dict(start.state_dict())
        return []
    if not graft:
        raise ValueError(f"{source} holds a different model config than the recipe's (set graft = true "
                         "to continue it with other layer kinds or a wider stream, MLP or lql)")
    old, new = _serving_as(start.config, model.config), model.config
    same = replace(old, layer_pattern=new.layer_pattern, mlp_hidden=new.mlp_hidden, lql_dim=new.lql_dim,
                   lql_heads=new.lql_heads, lql_shift=new.lql_shift, lql_token_key=new.lql_token_key,
                   d_model=new.d_model) == new
    if (not same or old.d_model > new.d_model or old.mlp_hidden > new.mlp_hidden or old.lql_dim > new.lql_dim
            or old.lql_heads > new.lql_heads or old.lql_shift > new.lql_shift
            or (old.lql_shift and old.lql_dim != new.lql_dim)
            or (old.lql_shift and old.lql_token_key != new.lql_token_key)):
        raise ValueError(f"{source}: grafting changes layer kinds and widens the residual stream, the MLP and lql "
                         "(or shifts its keys) only; the recipe changes more of the model")
    if new.global_rope and (old.lql_dim, old.lql_heads, old.lql_shift) != (new.lql_dim, new.lql_heads, new.lql_shift):
        raise ValueError(f"{source}: a wider lql with global_rope would rotate its trained dims at other frequencies")
    fresh = [i for i, (a, b) in enumerate(zip(start.config.layer_pattern, model.config.layer_pattern)) if a != b]
    initial = model.state_dict()
    kept = {name: _grown_stream(name, t, initial[name], old, new) for name, t in start.state_dict().items()
            if not any(name.startswith(f"blocks.{i}.attn.") for i in fresh)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [n for n in missing if not n.endswith("attn.token_down.weight")]     # new with token keys
    if unexpected or any(not any(n.startswith(f"blocks.{i}.attn.") for i in fresh) for n in missing):
        raise ValueError(f"{source}: weights do not fit the grafted model ({unexpected[:3]} {missing[:3]})")
    return fresh
