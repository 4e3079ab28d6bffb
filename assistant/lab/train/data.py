"""Tokenized training data: crates packed as repositories, fill-in-the-middle, memory-mapped uint16 shards.

Each crate becomes one document:
    <|repo_name|>crate\n <|file_sep|>path\n text <|file_sep|>path\n text … <|endoftext|>
so that global layers learn to copy across the files of one repository. Each file, at `fim_rate`, is cut at two random
points into prefix/middle/suffix and written as PSM (<|fim_prefix|>pre<|fim_suffix|>suf<|fim_middle|>mid) or, half the
time, SPM (<|fim_prefix|><|fim_suffix|>suf<|fim_middle|>pre mid), the StarCoder conventions; tokenizer/layout.py owns
that layout, for prompts too. At `fim_line_rate` a cut's middle is instead the rest of one line (`line_span`), the shape
of an editor's completion, whose suffix starts at the line's end; at `fim_window_rate` such a cut is laid out as the
engine prompts (prompt.py): SPM of a few lines around the cursor, after the rest of the file as a file of its own
(`window`). At `anonymize_rate`, a crate's own identifiers are first renamed to fresh random names (anonymize.py), so
that they can only be predicted by copying from context; with `order = "definitions-first"` a crate's files come in
definitions-before-uses order (order.py). At `repeat_rate`, a crate is written twice in a row, the second time token for
token: every token of the copy is predictable by copying from one crate-length back (inside a training window for the
crates shorter than one), the signal that teaches a model to copy (induction); plain code rewards it too rarely
(BENCHMARKS.md, issue 20). Few crates are that short (0.4% of the training tokens), so at `echo_rate` a crate is instead
cut into chunks of `echo_min`-`echo_max` tokens, each written twice in a row: every copy sits one chunk back, past the
sliding window and inside a training window, where only the global layers can reach it. Real code makes even an echo
partly predictable without copying; at `copy_rate` a crate instead carries blocks of random tokens, each written again
further on (`copy_blocks`): nothing but the block's first occurrence predicts its copy. At `copy_code_share` a block is
instead a span of the previous crate's code: its tokens are common ones (`_`, `self`, `(`), so finding the first
occurrence takes a match of several tokens, as a made-up name built of common pieces does.
"""
from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tokenizer import Layout, load_tokenizer

from ..corpus.shards import records
from .anonymize import anonymize, common_names
from .order import definitions_first

ORDERS = ("path", "definitions-first")
OUTSIDE_CHARS = (14_000, 7_000)   # a windowed cut's file outside its window, before and after: ~4K / ~2K tokens


@dataclass(frozen=True)
class PackConfig:
    fim_rate: float = 0.5
    spm_rate: float = 0.5
    fim_line_rate: float = 0.0      # share of FIM cuts whose middle is the rest of one line (line_span)
    fim_window_rate: float = 0.0    # share of those laid out as the engine's spm window, the file's rest before it
    window_lines: int = 12          # the window: 1 to this many lines above and below the cursor's line
    seed: int = 1234
    anonymize_rate: float = 0.0     # share of crates whose own identifiers are renamed (anonymize.py)
    common_share: float = 0.02      # names used by this share of the split's crates are never renamed
    order: str = "path"             # a crate's files by path, or "definitions-first" (order.py)
    repeat_rate: float = 0.0        # share of crates written twice in a row, the copy token for token
    echo_rate: float = 0.0          # share of crates whose chunks are each written twice in a row (echo())
    echo_min: int = 512             # chunk lengths in tokens: the copy's distance, past the sliding window
    echo_max: int = 2048
    copy_rate: float = 0.0          # share of crates that carry random-token blocks and their copies (copy_blocks())
    copy_every: int = 1024          # one block per this many tokens of such a crate
    copy_distance: int = 3072       # a copy starts up to this many tokens after its block
    copy_near: int = 0              # and at least this many (0: one block length): past the window, say
    copy_code_share: float = 0.0    # share of blocks that are a span of the previous crate's code, not random ids

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"unknown file order '{self.order}': use one of {ORDERS}")
        if not 0 < self.echo_min <= self.echo_max:
            raise ValueError(f"echo chunks of {self.echo_min}-{self.echo_max} tokens: need 0 < echo_min <= echo_max")
        if self.copy_every < 1 or max(self.copy_near, COPY_BLOCK[1]) > self.copy_distance:
            raise ValueError(f"copy blocks every {self.copy_every} tokens, copies {self.copy_near}-"
                             f"{self.copy_distance} tokens on: need copy_every >= 1 and "
                             f"max(copy_near, {COPY_BLOCK[1]}) <= copy_distance")
        if self.window_lines < 1:
            raise ValueError(f"window_lines {self.window_lines}: a window holds at least one line either side")
        for name in ("fim_rate", "spm_rate", "fim_line_rate", "fim_window_rate", "copy_code_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name)}: a share, from 0 to 1")


def echo(ids: list[int], rng: random.Random, shortest: int, longest: int) -> list[int]:
    """`ids` cut into chunks of `shortest`-`longest` tokens (the last may be shorter), each followed by itself."""
    out, start = [], 0
    while start < len(ids):
        chunk = ids[start:start + rng.randint(shortest, longest)]
        out += chunk + chunk
        start += len(chunk)
    return out


COPY_BLOCK = (16, 96)     # a random block's length in tokens
COPY_TOKENS = 300         # random blocks draw ids from here to the vocabulary's end: no special or byte tokens


def copy_blocks(ids: list[int], rng: random.Random, every: int, distance: int, vocab_size: int,
                near: int = 0, donor: Sequence[int] = (), code_share: float = 0.0) -> list[int]:
    """`ids` with a block inserted about every `every` tokens, and the same block inserted again between
    max(one block-length, `near`) and `distance` tokens of `ids` later (never inside its own block). A block is
    random token ids or, at `code_share` (where `donor` is long enough), a span of `donor`'s tokens."""
    inserts: list[tuple[int, int, list[int]]] = []      # (position in ids, order, tokens)
    for n, at in enumerate(range(rng.randrange(every), len(ids), every)):
        length = rng.randint(*COPY_BLOCK)
        if code_share > 0 and len(donor) >= length and rng.random() < code_share:
            start = rng.randrange(len(donor) - length + 1)
            block = list(donor[start:start + length])
        else:
            block = [rng.randrange(COPY_TOKENS, vocab_size) for _ in range(length)]
        later = min(len(ids), at + rng.randint(max(len(block), near), distance))
        inserts += [(at, 2 * n, block), (later, 2 * n + 1, block)]
    out, done = [], 0
    for at, _, block in sorted(inserts, key=lambda x: (x[0], x[1])):
        out += ids[done:at] + block
        done = at
    return out + ids[done:]


def line_span(text: str, rng: random.Random) -> tuple[int, int] | None:
    """A FIM cut (a, b) whose middle is the rest of one non-blank line from a cursor in it: at its indentation a third
    of the time (a whole line), else anywhere in its text; the suffix then starts with the line's end, as a
    completion request's does. None for a file without a non-blank line."""
    lines, start = [], 0     # (where its text starts after the indentation, where it ends)
    for line in text.split("\n"):
        if line.strip():
            lines.append((start + len(line) - len(line.lstrip()), start + len(line)))
        start += len(line) + 1
    if not lines:
        return None
    indent, end = rng.choice(lines)
    return (indent if rng.random() < 1 / 3 else rng.randrange(indent, end)), end


def window(text: str, a: int, b: int, rng: random.Random, most: int) -> tuple[int, int]:
    """The engine's SPM window around a line-shaped cut (a, b): from the newline 1 to `most` lines above the cursor's
    line to the one that ends a line 1 to `most` lines below it (or the text's ends), as its line chunks cut it."""
    start = text.rfind("\n", 0, a)
    for _ in range(rng.randint(1, most)):
        start = text.rfind("\n", 0, start) if start > 0 else -1
    end = b
    for _ in range(rng.randint(1, most)):
        end = text.find("\n", end + 1) if end < len(text) else -1
        end = len(text) if end < 0 else end
    return max(start, 0), end


class Packer:
    """Turns a crate's files into one token sequence, in the layout prompts use (tokenizer/layout.py)."""

    def __init__(self, tok: Tokenizer, config: PackConfig) -> None:
        self.layout, self.config = Layout(tok), config

    def fim(self, path: str, text: str, a: int, b: int, spm: bool) -> list[int]:
        """A file cut at characters a <= b into prefix, middle and suffix, in SPM or PSM order."""
        encode = self.layout.encode
        pre, mid, suf = encode(text[:a]), encode(text[a:b]), encode(text[b:])
        order = self.layout.spm if spm else self.layout.psm
        return self.layout.file_header(path) + order(pre, suf, mid)

    def windowed(self, path: str, text: str, a: int, b: int, rng: random.Random) -> list[int]:
        """A line-shaped cut as the engine prompts it: the file outside the window around the cursor (at most
        ~the engine's 4K tokens before it and 2K after), then the file again as SPM of the window alone."""
        start, end = window(text, a, b, rng, self.config.window_lines)
        head, tail = text[:start], text[end:]
        if len(head) > OUTSIDE_CHARS[0]:                      # whole lines: the last ones before the window…
            cut = head.find("\n", len(head) - OUTSIDE_CHARS[0])
            head = head[cut:] if cut >= 0 else ""
        if len(tail) > OUTSIDE_CHARS[1]:                      # …and the first ones after it
            tail = tail[:max(tail.rfind("\n", 0, OUTSIDE_CHARS[1]), 0)]
        outside = self.layout.file_header(path) + self.layout.encode(head + tail) if head + tail else []
        return outside + self.fim(path, text[start:end], a - start, b - start, spm=True)

    def file(self, path: str, text: str, rng: random.Random) -> list[int]:
        if rng.random() >= self.config.fim_rate or len(text) < 3:
            return self.layout.file_header(path) + self.layout.encode(text)
        line_cut = self.config.fim_line_rate > 0 and rng.random() < self.config.fim_line_rate  # no draw at rate 0
        span = line_span(text, rng) if line_cut else None
        if span and self.config.fim_window_rate > 0 and rng.random() < self.config.fim_window_rate:
            return self.windowed(path, text, *span, rng)
        a, b = span or sorted(rng.sample(range(len(text) + 1), 2))
        return self.fim(path, text, a, b, spm=rng.random() < self.config.spm_rate)

    def crate(self, name: str, files: list[tuple[str, str]], rng: random.Random) -> list[int]:
        ids = self.layout.repo_header(name)
        for path, text in files:
            ids += self.file(path, text, rng)
        return ids + [self.layout.eos]


def crates(corpus: Path, split: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    for name, group in groupby(records(corpus, split), key=lambda r: (r["crate"], r["version"])):
        yield name[0], [(r["path"], r["text"]) for r in group]


def tokenize_split(corpus: Path, split: str, tok: Tokenizer, out: Path, config: PackConfig) -> int:
    """Write `out` (uint16 tokens, written to a temp name then renamed) and `out`.json; returns the token count."""
    if tok.get_vocab_size() > 65535:
        raise ValueError("uint16 shards need a vocabulary under 65,536 tokens")
    packer, rng = Packer(tok, config), random.Random(f"{config.seed}:{split}")
    common = set()
    if config.anonymize_rate > 0:
        common = common_names((files for _, files in crates(corpus, split)), config.common_share)
    tmp = out.with_suffix(".tmp")
    total, donor = 0, []      # donor: the previous crate's code tokens, for code blocks
    special = set(packer.layout.special.values())
    with tmp.open("wb") as f:
        for name, files in crates(corpus, split):
            if config.order == "definitions-first":
                files = definitions_first(files)
            if config.anonymize_rate > 0 and rng.random() < config.anonymize_rate:
                files = anonymize(files, common, rng)
            ids = packed = packer.crate(name, files, rng)
            if config.repeat_rate > 0 and rng.random() < config.repeat_rate:
                ids = ids + ids
            if config.echo_rate > 0 and rng.random() < config.echo_rate:
                ids = echo(ids[:-1], rng, config.echo_min, config.echo_max) + ids[-1:]   # one <|endoftext|>
            if config.copy_rate > 0 and rng.random() < config.copy_rate:
                ids = copy_blocks(ids[:-1], rng, config.copy_every, config.copy_distance, tok.get_vocab_size(),
                                  config.copy_near, donor, config.copy_code_share) + ids[-1:]
            if config.copy_code_share > 0:
                donor = [t for t in packed if t not in special]
            ids = np.asarray(ids, dtype=np.uint16)
            f.write(ids.tobytes())
            total += len(ids)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps({"tokens": total, "split": split, "corpus": str(corpus),
                                                    "vocab_size": tok.get_vocab_size(), **asdict(config)}) + "\n")
    return total


def _made_with(path: Path, tok: Tokenizer, config: PackConfig) -> bool:
    """Whether the token file `path` exists and its record says it was packed this way by this vocabulary."""
    meta = path.with_suffix(".json")
    if not path.is_file() or not meta.is_file():
        return False
    made, defaults = json.loads(meta.read_text()), asdict(PackConfig())
    return made.get("vocab_size") == tok.get_vocab_size() and all(  # a key added later: its default then
        made.get(key, defaults[key]) == value for key, value in asdict(config).items())


def prepare_tokens(folder: Path, corpus: Path, tokenizer: Path, config: PackConfig) -> dict[str, Path]:
    """Token files of the train and validation splits, tokenized on first use and reused afterwards, unless
    they were packed with other settings (FIM rates, seed) or another vocabulary size: then made again."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {split: folder / f"{split}.bin" for split in ("train", "validation")}
    tok = load_tokenizer(tokenizer)
    for split, path in paths.items():
        if not _made_with(path, tok, config):
            tokenize_split(corpus, split, tok, path, config)
    return paths


def load_tokens(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"no token file {path}: `rustle train` writes it from the corpus on first use")
    return np.memmap(path, dtype=np.uint16, mode="r")
