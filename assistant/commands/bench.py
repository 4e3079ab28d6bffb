"""`rustle bench tokenizer | roundtrip`: benchmarks that print numbers."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from tokenizer import DEFAULT_TOKENIZER, load_tokenizer

from ..console import console, table


def tokenizer_command(args: argparse.Namespace) -> int:
    from ..bench import tokenizers as bench
    from ..corpus.shards import texts

    held_out = list(texts(args.corpus, "test"))
    rows: list[bench.CompressionRow] = []

    def add(row: bench.CompressionRow) -> None:
        rows.append(row)
        if args.json:
            print(json.dumps(asdict(row)), flush=True)
        else:
            console.print(f"{row.tokenizer:>16} {row.vocab_size:>7,}  {row.chars_per_token:.3f} chars/token")

    count, vocab, name = bench.tekken_counter()
    add(bench.CompressionRow(f"tekken ({name})", vocab, bench.chars_per_token(count, held_out), None))
    sample = None if args.sample_mb is None else args.sample_mb << 20
    for size in args.sizes:
        for kind in ("rust", "plain"):
            tok, seconds = bench.train_bpe(args.corpus, size, kind, sample)
            add(bench.CompressionRow(f"{kind} bpe", size, bench.chars_per_token(bench.hf_counter(tok), held_out),
                                     seconds))
        count, seconds = bench.train_unigram(args.corpus, size, args.unigram_sample_mb << 20)
        add(bench.CompressionRow("sp unigram", size, bench.chars_per_token(count, held_out), seconds))
    shipped = load_tokenizer(args.tokenizer)
    one, both = bench.throughput(shipped, held_out)
    if args.json:
        print(json.dumps({"tokenizer": args.tokenizer.name, "mb_per_s_one_core": one, "mb_per_s_both_cores": both}))
    else:
        console.print(table("Characters per token on held-out test crates",
                            ["tokenizer", "vocabulary", "chars/token", "train s"],
                            [[r.tokenizer, r.vocab_size, r.chars_per_token, "" if r.train_seconds is None
                              else f"{r.train_seconds:.0f}"] for r in rows]))
        console.print(f"{args.tokenizer.name} encodes {one:.2f} MB/s on one core, {both:.2f} MB/s batched on all cores")
    return 0


def roundtrip_command(args: argparse.Namespace) -> int:
    from ..bench.tokenizers import roundtrip
    from ..corpus.shards import texts

    tok = load_tokenizer(args.tokenizer)
    results = {split: roundtrip(tok, texts(args.corpus, split)) for split in ("train", "validation", "test")}
    ok, total = sum(r[0] for r in results.values()), sum(r[1] for r in results.values())
    if args.json:
        print(json.dumps({"tokenizer": args.tokenizer.name, "lossless_files": ok, "files": total}))
    else:
        console.print(table(f"decode(encode(x)) == x with {args.tokenizer.name}", ["split", "lossless", "files"],
                            [[s, r[0], r[1]] for s, r in results.items()] + [["all", ok, total]]))
    return 0 if ok == total else 1


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("bench", help="benchmarks that print numbers").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = group.add_parser("tokenizer", help="chars/token on held-out crates against baselines; throughput")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[8192, 16384, 32768])
    p.add_argument("--sample-mb", type=int, default=None, help="BPE training sample (default: the whole split)")
    p.add_argument("--unigram-sample-mb", type=int, default=24, help="sentencepiece training sample")
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="the tokenizer to time")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(run=tokenizer_command)
    p = group.add_parser("roundtrip", help="count corpus files that the tokenizer round-trips exactly")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=roundtrip_command)
