"""Training a byte-level BPE tokenizer from corpus texts, and saving it as a Hugging Face tokenizer folder."""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, trainers

from .pretokenize import pre_tokenizer
from .special import ENDOFTEXT, PAD, SPECIAL_TOKENS

MAX_TOKEN_CHARS = 32  # no vocabulary slot for a 200-character run of '='


@dataclass(frozen=True)
class TokenizerRecipe:
    vocab_size: int = 16384
    pre_tokenizer: str = "rust"   # "rust" or "plain" (GPT-2's pattern: the ablation)
    corpus: str = ""              # the corpus folder it was trained on
    split: str = "train"
    sample_bytes: int | None = None  # None: the whole split; else an evenly spread sample of about this size
    split_seed: int | None = None    # the corpus's crate-split seed (BPE training itself is deterministic)


def build_tokenizer(recipe: TokenizerRecipe) -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizer(recipe.pre_tokenizer)
    tok.decoder = decoders.ByteLevel()
    return tok


def train(texts: Iterable[str], recipe: TokenizerRecipe) -> Tokenizer:
    """BPE over the byte-level alphabet; special tokens take ids 0..6."""
    tok = build_tokenizer(recipe)
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=list(_byte_alphabet()),
        max_token_length=MAX_TOKEN_CHARS,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _byte_alphabet() -> set[str]:
    from tokenizers.pre_tokenizers import ByteLevel
    return set(ByteLevel.alphabet())


def save(tok: Tokenizer, out: Path, recipe: TokenizerRecipe) -> None:
    """tokenizer.json plus the files `transformers.AutoTokenizer.from_pretrained(out)` reads, and the recipe."""
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": ENDOFTEXT,
        "unk_token": None,
        "pad_token": PAD,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (ENDOFTEXT, PAD)],
        "clean_up_tokenization_spaces": False,  # decoding must give back the exact source text
        "model_max_length": 1 << 20,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")
