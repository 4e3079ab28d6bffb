"""Hugging Face Llama / Qwen2 checkpoints as RustleLM full-attention models (the teacher of distillation).

Both use the same RoPE layout (rotate-half), RMSNorm, SwiGLU and GQA head grouping as our `full`
layers; Qwen2 adds biases to q, k and v. Weights are read from safetensors only.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import ModelConfig
from .model import RustleLM

SUPPORTED = ("llama", "qwen2")


def is_hf_checkpoint(path: Path) -> bool:
    config = path / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") in SUPPORTED


def from_hf(path: Path) -> RustleLM:
    hf = json.loads((path / "config.json").read_text())
    if hf.get("model_type") not in SUPPORTED:
        raise ValueError(f"{path}: model_type {hf.get('model_type')!r} is not one of {SUPPORTED}")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    config = ModelConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=head_dim, mlp_hidden=hf["intermediate_size"],
        layer_pattern=("full",) * hf["num_hidden_layers"], global_rope=True, rope_theta=hf.get("rope_theta", 10000.0),
        norm_eps=hf.get("rms_norm_eps", 1e-6), tie_embeddings=hf.get("tie_word_embeddings", False),
        qkv_bias=hf["model_type"] == "qwen2")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {path}: only safetensors checkpoints are read")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights |= load_file(str(f))
    state = {"embed.weight": weights["model.embed_tokens.weight"], "norm.weight": weights["model.norm.weight"]}
    if not config.tie_embeddings:
        state["head.weight"] = weights["lm_head.weight"]
    for i in range(config.n_layers):
        hf_layer, ours = f"model.layers.{i}.", f"blocks.{i}."
        attn = hf_layer + "self_attn."
        state[ours + "attn.qkv.weight"] = torch.cat([weights[attn + f"{p}_proj.weight"] for p in "qkv"])
        if config.qkv_bias:
            state[ours + "attn.qkv.bias"] = torch.cat([weights[attn + f"{p}_proj.bias"] for p in "qkv"])
        state[ours + "attn.out.weight"] = weights[attn + "o_proj.weight"]
        state[ours + "mlp.gate_up.weight"] = torch.cat([weights[hf_layer + "mlp.gate_proj.weight"],
                                                       weights[hf_layer + "mlp.up_proj.weight"]])
        state[ours + "mlp.down.weight"] = weights[hf_layer + "mlp.down_proj.weight"]
        state[ours + "attn_norm.weight"] = weights[hf_layer + "input_layernorm.weight"]
        state[ours + "mlp_norm.weight"] = weights[hf_layer + "post_attention_layernorm.weight"]
    model = RustleLM(config)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()
