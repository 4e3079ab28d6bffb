"""Rustle's Rust-aware byte-level BPE tokenizer: pre-tokenizer, training, loading."""
from .load import DEFAULT_TOKENIZER, load_hf_tokenizer, load_tokenizer
from .special import SPECIAL_TOKENS

__all__ = ["DEFAULT_TOKENIZER", "SPECIAL_TOKENS", "load_hf_tokenizer", "load_tokenizer"]
