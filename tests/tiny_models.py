"""Tiny model configs and the error measure the model tests share."""
import torch

from model.config import ModelConfig


def tiny(pattern=("gdn", "swa", "gdn", "lql"), **overrides) -> ModelConfig:
    sizes = dict(vocab_size=97, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, mlp_hidden=64, window=8,
                 gdn_heads=2, gdn_head_dim=8, chunk_size=16, lql_dim=16, lql_heads=2, layer_pattern=pattern)
    return ModelConfig(**{**sizes, **overrides})


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())
