"""Loading a tokenizer folder (the shipped one by default) as `tokenizers` or `transformers` objects."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

DEFAULT_TOKENIZER = Path(__file__).parent / "rustle-bpe-16k"


def load_tokenizer(path: Path = DEFAULT_TOKENIZER) -> Tokenizer:
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer at {file}: pass a folder holding tokenizer.json")
    return Tokenizer.from_file(str(file))


def tokenizer_folder(model_dir: Path) -> Path:
    """Where a model folder's tokenizer is: its own, else the shipped one (converted checkpoints carry none)."""
    return model_dir if (model_dir / "tokenizer.json").is_file() else DEFAULT_TOKENIZER


def tokenizer_of(model_dir: Path) -> Tokenizer:
    return load_tokenizer(tokenizer_folder(model_dir))


def load_hf_tokenizer(path: Path = DEFAULT_TOKENIZER):
    """The same tokenizer as a `transformers.PreTrainedTokenizerFast` (offline: a local folder)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
