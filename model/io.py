"""A model folder: model.safetensors + config.json (readable by transformers' AutoConfig) + the tokenizer files."""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .config import MAX_KEY_DIM, ModelConfig
from .memory import GATE_FEATURES, MAX_PREVIOUS, MemoryReader
from .model import RustleLM, count_parameters

WEIGHTS = "model.safetensors"
MEMORY = "memory.safetensors"   # the fitted memory reader (model/memory.py), where `rustle train-memory` wrote one
MEMORY_LOG = "memory.log"       # and the log of its fit
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


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded, with one message that says why."""


def load_model(path: Path, dtype: torch.dtype = torch.float32) -> RustleLM:
    """The model in `path`, validated before anything is allocated: sane sizes in config.json, the weights'
    parameter count equal to the config's, and memory for both on this machine (ModelFolderError if not)."""
    if not (path / WEIGHTS).is_file() or not (path / "config.json").is_file():
        raise ModelFolderError(f"{path}: no {WEIGHTS} and config.json; pass a folder written by `rustle train`")
    try:
        config = ModelConfig.load(path / "config.json")
        expected = count_parameters(config)                      # on the meta device: nothing allocated
        with safe_open(str(path / WEIGHTS), "pt") as f:
            stored = sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    except Exception as err:                                     # a bad config, a damaged weights file
        raise ModelFolderError(f"{path}: {err}") from err
    if stored != expected:
        raise ModelFolderError(f"{path}: config.json describes {expected:,} parameters, {WEIGHTS} holds {stored:,}")
    need, free = 8 * expected, _available_memory()               # the file's tensors and the fp32 model at once
    if free is not None and need > free:
        raise ModelFolderError(f"{path}: loading needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB is free")
    model = RustleLM(config)
    weights = {name.removeprefix(PREFIX): t for name, t in load_file(str(path / WEIGHTS)).items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:                                  # same count, other names or shapes
        raise ModelFolderError(f"{path}: {WEIGHTS} does not fit config.json ({str(err).splitlines()[0]})") from err
    if (path / MEMORY).is_file():
        model.fitted_memory = load_memory(path / MEMORY, config).with_embeddings(model.embed.weight)
    return model.to(dtype).eval()


def save_memory(reader: MemoryReader, out: Path, metadata: dict[str, str] | None = None) -> None:
    """A fitted memory reader as `out` (a model folder's memory.safetensors), in bf16 like the weights (fit it
    with `bf16_rounded` to report what is saved)."""
    tensors = {"key_hidden": reader.key_hidden, "key_token": reader.key_token,
               "scale": torch.tensor([reader.scale]), "gate": reader.gate}
    if reader.layer is not None:                       # a small whole number: exact in bf16
        tensors["layer"] = torch.tensor([float(reader.layer)])
    if reader.previous > 0:
        tensors["previous"] = torch.tensor([reader.previous])
    save_file({name: t.detach().to(torch.bfloat16).contiguous().cpu() for name, t in tensors.items()}, str(out),
              metadata={"format": "pt", "gate_features": ",".join(GATE_FEATURES), **(metadata or {})})


def load_memory(path: Path, config: ModelConfig) -> MemoryReader:
    """The reader in `path`, checked against the model's config (ModelFolderError if it does not fit)."""
    try:
        tensors = load_file(str(path))
    except Exception as err:
        raise ModelFolderError(f"{path}: {err}") from err
    layer = tensors.pop("layer", None)               # readers fitted before layers were a choice: the final states
    previous = tensors.pop("previous", torch.zeros(1))   # and before the key before a candidate counted: 0
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    key_hidden = shapes.get("key_hidden", ())
    dim = key_hidden[1] if len(key_hidden) == 2 else 0   # a fitted reader's keys may be wider than memory_dim
    expected = {"key_hidden": (config.d_model, dim), "key_token": (config.d_model, dim), "scale": (1,),
                "gate": (len(GATE_FEATURES),)}
    if shapes != expected or not 1 <= dim <= MAX_KEY_DIM:
        raise ModelFolderError(f"{path}: holds {shapes}, the model's memory needs key maps [{config.d_model}, d] "
                               f"(d from 1 to {MAX_KEY_DIM}), a scale [1] and a gate [{len(GATE_FEATURES)}]; "
                               "run `rustle train-memory` again")
    if layer is not None and (layer.shape != (1,) or not float(layer[0]).is_integer()
                              or not 0 <= float(layer[0]) < config.n_layers):
        raise ModelFolderError(f"{path}: reads layer {layer.tolist()}, the model has blocks 0 to "
                               f"{config.n_layers - 1}; run `rustle train-memory` again")
    if previous.shape != (1,) or not 0 <= float(previous[0]) <= MAX_PREVIOUS:
        raise ModelFolderError(f"{path}: weighs the key before a candidate by {previous.tolist()}, expected a number "
                               f"from 0 to {MAX_PREVIOUS}; run `rustle train-memory` again")
    tensors = {name: t.float() for name, t in tensors.items()}
    return MemoryReader(tensors["key_hidden"], tensors["key_token"], float(tensors["scale"][0]), tensors["gate"],
                        layer=None if layer is None else int(layer[0]), previous=float(previous[0]))


def _available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux: MemAvailable), None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
