"""Distill-then-Replace on tiny models: ours and a randomly initialised Hugging Face Llama."""
import json

import torch

from model.config import ModelConfig
from model.io import load_model, save_model
from model.model import RustleLM
from tokenizer import DEFAULT_TOKENIZER

FAST = ["--steps", "20", "--windows", "8", "--seq-len", "64", "--json"]


def test_distill_replaces_layers_within_budget_and_reports_the_uniform_placement(rustle, corpus, tmp_path):
    torch.manual_seed(0)
    teacher = RustleLM(ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                                   layer_pattern=("full",) * 4, global_rope=True, gdn_heads=2, gdn_head_dim=16,
                                   chunk_size=16, window=16))
    save_model(teacher, tmp_path / "teacher", DEFAULT_TOKENIZER)
    out = rustle("distill", "--teacher", str(tmp_path / "teacher"), "--corpus", str(corpus), "--out",
                 str(tmp_path / "d"), "--budget", "0.05", *FAST).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["uniform_pattern"] == ["gdn", "gdn", "gdn", "full"]
    assert len(report["layer_errors"]) == 4 and all(e >= 0 for e in report["layer_errors"])
    kept = [t for t in report["tried"] if t["kept"]]
    assert all(t["val_loss"] <= report["teacher_val_loss"] * 1.05 for t in kept)
    assert report["chosen_pattern"].count("gdn") == len(kept) <= 3
    hybrid = load_model(tmp_path / "d" / "model")
    assert list(hybrid.config.layer_pattern) == report["chosen_pattern"]


def test_distill_accepts_a_hugging_face_llama_folder(rustle, corpus, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=16384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    llama.save_pretrained(tmp_path / "llama", safe_serialization=True)
    out = rustle("distill", "--teacher", str(tmp_path / "llama"), "--corpus", str(corpus), "--out",
                 str(tmp_path / "d"), "--replacement", "swa", "--budget", "1.0", *FAST).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["chosen_pattern"].count("swa") == 1  # at most 75% of 2 layers; a loss budget of +100%
    assert load_model(tmp_path / "d" / "model").config.layer_pattern == tuple(report["chosen_pattern"])
