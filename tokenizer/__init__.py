"""Rustle's Rust-aware byte-level BPE tokenizer: pre-tokenizer, training, loading."""
from .layout import Layout
from .load import DEFAULT_TOKENIZER, load_hf_tokenizer, load_tokenizer, tokenizer_folder, tokenizer_of
from .special import SPECIAL_TOKENS

__all__ = ["DEFAULT_TOKENIZER", "SPECIAL_TOKENS", "Layout", "load_hf_tokenizer", "load_tokenizer",
           "tokenizer_folder", "tokenizer_of"]
