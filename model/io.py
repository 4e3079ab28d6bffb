"""A model folder: model.safetensors + config.json (readable by transformers' AutoConfig) + the tokenizer files."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .model import RustleLM

DEFAULT_MODEL = Path(__file__).parent / "checkpoints" / "rustle-small"  # what every command uses by default
WEIGHTS = "model.safetensors"
PREFIX = "model."  # the keys as transformers' RustleForCausalLM names them, so from_pretrained reads the same file
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "recipe.json")


def save_model(model: RustleLM, out: Path, tokenizer: Path | None = None, dtype: torch.dtype | None = None) -> None:
    """Weights (cast to `dtype` if given), config, and the tokenizer files from `tokenizer`."""
    out.mkdir(parents=True, exist_ok=True)
    weights = {PREFIX + name: t.detach().to(dtype or t.dtype).contiguous().cpu()
               for name, t in model.state_dict().items()}
    save_file(weights, str(out / WEIGHTS), metadata={"format": "pt"})
    config = {"model_type": "rustle", "architectures": ["RustleForCausalLM"], **asdict(model.config)}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file() and (tokenizer / name).resolve() != (out / name).resolve():
                shutil.copy2(tokenizer / name, out / name)


def load_model(path: Path, dtype: torch.dtype = torch.float32) -> RustleLM:
    if not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"no {WEIGHTS} in {path}: pass a folder written by save_model or `rustle train`")
    model = RustleLM(ModelConfig.load(path / "config.json"))
    weights = {name.removeprefix(PREFIX): t for name, t in load_file(str(path / WEIGHTS)).items()}
    model.load_state_dict(weights)
    return model.to(dtype).eval()
