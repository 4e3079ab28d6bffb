"""`rustle tokenizer train | stats | show`."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.text import Text

from tokenizer import DEFAULT_TOKENIZER, load_tokenizer

from .console import console, progress_console, table

COLOURS = ["on grey23", "on dark_blue", "on dark_green", "on dark_red", "on dark_magenta"]


def train_command(args: argparse.Namespace) -> int:
    from tokenizer.train import TokenizerRecipe, save, train

    from ..lab.corpus.shards import texts

    sample = None if args.sample_mb is None else args.sample_mb << 20
    args.out = args.out or Path(f"tokenizer-{args.vocab_size // 1024}k")
    recipe = TokenizerRecipe(vocab_size=args.vocab_size, pre_tokenizer="plain" if args.plain else "rust",
                             corpus=str(args.corpus), sample_bytes=sample, split_seed=_corpus_seed(args.corpus))
    try:
        corpus_texts = texts(args.corpus, "train", sample)
        start = time.monotonic()
        with progress_console.status(f"training a {args.vocab_size:,}-token BPE on {args.corpus}"):
            tok = train(corpus_texts, recipe)
    except FileNotFoundError as err:
        console.print(f"[red]{err}[/]")
        return 2
    save(tok, args.out, recipe)
    console.print(f"saved {tok.get_vocab_size():,} tokens to {args.out} in {time.monotonic() - start:.0f} s")
    return 0


def _corpus_seed(corpus: Path) -> int | None:
    """The split seed recorded in the corpus manifest, so the recipe says which split it learned from."""
    import json

    from ..lab.corpus.manifest import read_meta

    config = read_meta(corpus / "manifest.sqlite", "config")
    return json.loads(config)["split"]["seed"] if config else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        console.print(f"[yellow]skipping {path}:[/] {err}")
        return None


def stats_command(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.tokenizer)
    rows = []
    for path in args.files:
        text = _read(path)
        if text is not None:
            n = len(tok.encode(text, add_special_tokens=False).ids)
            rows.append([str(path), len(text), n, len(text) / max(n, 1)])
    if not rows:
        return 1
    if len(rows) > 1:
        chars, tokens = sum(r[1] for r in rows), sum(r[2] for r in rows)
        rows.append(["total", chars, tokens, chars / max(tokens, 1)])
    console.print(table(f"Tokenizer {args.tokenizer.name}", ["file", "chars", "tokens", "chars/token"], rows))
    return 0


def show_command(args: argparse.Namespace) -> int:
    """Print a file with each token on its own background colour, then the counts."""
    tok = load_tokenizer(args.tokenizer)
    text = _read(args.file)
    if text is None:
        return 1
    enc = tok.encode(text, add_special_tokens=False)
    out = Text()
    for i, (start, end) in enumerate(enc.offsets):
        out.append(text[start:end], style=COLOURS[i % len(COLOURS)])
    console.print(out, soft_wrap=True, highlight=False)
    console.print(f"\n{args.file}: {len(text):,} characters → {len(enc.ids):,} tokens "
                  f"({len(text) / max(len(enc.ids), 1):.2f} chars/token) with {args.tokenizer.name}, "
                  f"vocabulary {tok.get_vocab_size():,}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("tokenizer", help="train and inspect the Rust-aware tokenizer").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = group.add_parser("train", help="train a byte-level BPE on a corpus's train split")
    p.add_argument("--corpus", type=Path, required=True, help="a folder made by `rustle corpus build`")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: tokenizer-<size>)")
    p.add_argument("--sample-mb", type=int, default=None, help="train on an evenly spread sample of this size")
    p.add_argument("--plain", action="store_true", help="GPT-2's pre-tokenizer instead of the Rust-aware one")
    p.set_defaults(run=train_command)
    for name, helptext, handler in (("stats", "characters per token of files", stats_command),
                                    ("show", "print a file split into its tokens", show_command)):
        p = group.add_parser(name, help=helptext)
        if name == "stats":
            p.add_argument("files", nargs="+", type=Path)
        else:
            p.add_argument("file", type=Path)
        p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="a tokenizer folder")
        p.set_defaults(run=handler)
