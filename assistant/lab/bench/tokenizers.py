"""Tokenizer benchmarks: characters per token on held-out crates against baselines, throughput, round trips."""
from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from tokenizer.train import TokenizerRecipe, train

from ..corpus.shards import texts

Encoder = Callable[[list[str]], int]  # texts -> total number of tokens


@dataclass
class CompressionRow:
    tokenizer: str
    vocab_size: int
    chars_per_token: float
    train_seconds: float | None


def hf_counter(tok: Tokenizer) -> Encoder:
    return lambda batch: sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))


def chars_per_token(count: Encoder, held_out: list[str]) -> float:
    return sum(len(t) for t in held_out) / count(held_out)


def train_bpe(corpus: Path, vocab_size: int, kind: str, sample_bytes: int | None) -> tuple[Tokenizer, float]:
    start = time.monotonic()
    recipe = TokenizerRecipe(vocab_size=vocab_size, pre_tokenizer=kind, corpus=str(corpus), sample_bytes=sample_bytes)
    return train(texts(corpus, "train", sample_bytes), recipe), time.monotonic() - start


def train_unigram(corpus: Path, vocab_size: int, sample_bytes: int) -> tuple[Encoder, float]:
    """A sentencepiece unigram model of the same vocabulary size, trained on lines of the same split.

    sentencepiece works on lines, so files are encoded line by line and each newline counts one
    token (as if it were a user-defined symbol); indentation is kept (no whitespace normalisation).
    """
    import sentencepiece as spm

    start = time.monotonic()
    lines = [line for text in texts(corpus, "train", sample_bytes) for line in text.split("\n") if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "unigram")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
            normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
            split_digits=False, byte_fallback=True, max_sentence_length=1 << 14, input_sentence_size=2_000_000,
            shuffle_input_sentence=True, num_threads=os.cpu_count() or 1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    def count(batch: list[str]) -> int:
        lines = [line for text in batch for line in text.split("\n")]
        newlines = sum(text.count("\n") for text in batch)
        return sum(len(ids) for ids in sp.encode(lines)) + newlines

    return count, time.monotonic() - start


def tekken_counter() -> tuple[Encoder, int, str]:
    """Mistral's Tekken, loaded offline from the file inside the mistral-common wheel."""
    import mistral_common
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    files = sorted(glob.glob(os.path.join(os.path.dirname(mistral_common.__file__), "data", "tekken_*.json")))
    if not files:
        raise FileNotFoundError("mistral-common carries no tekken_*.json: install the dev extras")
    tek = Tekkenizer.from_file(files[-1])
    count = (lambda batch: sum(len(tek.encode(t, bos=False, eos=False)) for t in batch))
    return count, tek.n_words, Path(files[-1]).name


def throughput(tok: Tokenizer, sample: list[str]) -> tuple[float, float]:
    """MB/s encoding one file at a time on one core, and batched across all cores."""
    mb = sum(len(t.encode()) for t in sample) / 1e6
    start = time.monotonic()
    for t in sample:
        tok.encode(t, add_special_tokens=False)
    one = mb / (time.monotonic() - start)
    start = time.monotonic()
    tok.encode_batch(sample, add_special_tokens=False)
    return one, mb / (time.monotonic() - start)


def roundtrip(tok: Tokenizer, files: Iterable[str], batch: int = 256) -> tuple[int, int]:
    """(files that decode back to themselves exactly, files checked)."""
    ok = total = 0
    chunk: list[str] = []

    def check(chunk: list[str]) -> int:
        encodings = tok.encode_batch(chunk, add_special_tokens=False)
        decoded = tok.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
        return sum(a == b for a, b in zip(chunk, decoded))

    for text in files:
        chunk.append(text)
        total += 1
        if len(chunk) == batch:
            ok, chunk = ok + check(chunk), []
    return ok + (check(chunk) if chunk else 0), total
