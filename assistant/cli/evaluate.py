"""`rustle eval ppl | humaneval`."""
from __future__ import annotations

import argparse
import glob
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from model import DEFAULT_MODEL

from .console import console, table
from . import complete

HUMANEVAL = Path(__file__).resolve().parents[2] / "data" / "eval" / "humaneval-rs.jsonl"  # shipped in the repository


def _load(args: argparse.Namespace):
    """(args.model's model, its tokenizer) on args.threads threads, or None after saying why the folder cannot be
    used."""
    import torch

    from model.io import load_model
    from tokenizer import tokenizer_of

    if args.threads is not None:
        if args.threads < 1:
            console.print(f"[red]--threads {args.threads}: expected a whole number of at least 1[/]")
            return None
        torch.set_num_threads(args.threads)
    try:
        return load_model(args.model), tokenizer_of(args.model)
    except FileNotFoundError as err:
        console.print(f"[red]{err}[/]")
        return None


def _texts_and_model(args: argparse.Namespace):
    """(texts of the readable files matching args.files, model, tokenizer), or None after saying why."""
    texts = []
    for f in sorted({f for pattern in args.files for f in glob.glob(pattern, recursive=True)}):
        try:
            texts.append(Path(f).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            console.print(f"[yellow]skipping {f}:[/] {err}")
    if not texts:
        console.print(f"[red]no readable files match {' '.join(args.files)}[/]")
        return None
    loaded = _load(args)
    return None if loaded is None else (texts, *loaded)


def ppl_command(args: argparse.Namespace) -> int:
    from ..lab.eval.ppl import perplexity

    loaded = _texts_and_model(args)
    if loaded is None:
        return 2
    texts, model, tok = loaded
    report = perplexity(model, tok, texts, context=args.context, bf16=not args.fp32)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        console.print(f"{len(texts)} files, {report.tokens:,} tokens: {report.bits_per_byte:.4f} bits/byte")
        console.print(table("Loss by position", ["positions", "nats/token"], report.loss_by_position.items()))
    return 0


def humaneval_command(args: argparse.Namespace) -> int:
    from ..lab.eval.humaneval import evaluate, load_problems, model_completer

    if not args.problems.is_file():
        console.print(f"[red]no problems file {args.problems}[/]: pass --problems")
        return 2
    loaded = _load(args)
    if loaded is None:
        return 2
    model, tok = loaded
    problems = load_problems(args.problems, args.limit)
    greedy = model_completer(model, tok, temperature=0.0, max_new_tokens=args.max_new_tokens)
    sample = None if args.samples == 0 else model_completer(model, tok, temperature=0.8,
                                                            max_new_tokens=args.max_new_tokens)
    result = evaluate(problems, greedy, sample, n=args.samples, workers=args.workers)
    if args.json:
        print(json.dumps(result))
    else:
        console.print(result)
    return 0


def _on_filler(args: argparse.Namespace, evaluate: Callable):
    """`evaluate(filler texts, model, tokenizer)` on args.files and args.model, or None after saying why not."""
    loaded = _texts_and_model(args)
    if loaded is None:
        return None
    try:
        return evaluate(*loaded)
    except ValueError as err:
        console.print(f"[red]{err}[/]")
        return None


def recall_command(args: argparse.Namespace) -> int:
    from ..lab.eval.recall import recall

    rows = _on_filler(args, lambda filler, model, tok: recall(model, tok, filler, args.multiples, probes=args.probes,
                                                              kinds=tuple(args.kinds), bf16=not args.fp32))
    if rows is None:
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
    else:
        console.print(table("Recall at a distance", ["kind", "× window", "tokens back", "accuracy", "per token"],
                            [[r.kind, r.multiple, r.distance, r.accuracy, r.token_accuracy] for r in rows]))
    return 0


def recall_attention_command(args: argparse.Namespace) -> int:
    from ..lab.eval.recall_attention import recall_attention

    report = _on_filler(args, lambda filler, model, tok: recall_attention(model, tok, filler, args.multiple,
                                                                          args.probes, args.kind, tuple(args.force)))
    if report is None:
        return 2
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    console.print(f"{report.rows} expected tokens of {report.probes} {report.kind} probes {report.distance} tokens "
                  f"back: top-1 {report.top1:.3f}")
    console.print(table("lql attention at the expected tokens", ["layer", "head", "top-1", "rows", "on the answer",
                                                                  "answer on top", "rest of the line", "elsewhere"],
                        [[h.layer, h.head, "right" if h.right else "wrong", h.rows, f"{h.on_answer:.3f}",
                          f"{h.answer_on_top:.2f}", f"{h.on_definition:.3f}", f"{h.elsewhere:.3f}"]
                         for h in report.heads]))
    for spec, top1 in report.forced.items():
        console.print(f"heads {spec} on the answer key alone: top-1 {top1:.3f}")
    return 0


def repo_gain_command(args: argparse.Namespace) -> int:
    from ..lab.eval.repo_gain import repo_gain, sample_crates
    from ..lab.train.data import crates

    if args.every < 1 or args.ctx < 2:
        console.print("[red]--every must be at least 1 and --ctx at least 2[/]")
        return 2
    loaded = _load(args)
    if loaded is None:
        return 2
    model, tok = loaded
    try:
        sample = sample_crates(crates(args.corpus, args.split), args.every)[:args.crates]
        report = repo_gain(model, tok, sample, args.ctx, args.min_start, bf16=not args.fp32)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        console.print(f"{report.crates} crates, {report.files} files past {args.min_start} tokens "
                      f"({report.tokens:,} tokens): {report.repo_bits_per_byte:.4f} bits/byte after the repository, "
                      f"{report.alone_bits_per_byte:.4f} alone, gain {100 * report.gain:.1f}%")
        console.print(table("Loss by position", ["positions", "nats/token"], report.loss_by_position.items()))
    return 0


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for the model (default: PyTorch's; give 1 to run evaluations side by side)")
    p.add_argument("--json", action="store_true")


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("eval", help="evaluate a model").add_subparsers(dest="action", required=True,
                                                                              metavar="ACTION")
    p = group.add_parser("ppl", help="bits per byte on files, and loss by position")
    p.add_argument("--files", nargs="+", required=True, help="files or globs (quote them: **/*.rs)")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--fp32", action="store_true",
                   help="no bf16 autocast (CPUs without AVX512-BF16 or AMX: ~25x faster)")
    _model_options(p)
    p.set_defaults(run=ppl_command)
    p = group.add_parser("humaneval", help="HumanEval-Rust pass@1 and pass@10 with rustc")
    p.add_argument("--problems", type=Path, default=HUMANEVAL)
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--samples", type=int, default=20, help="samples per problem for pass@10 (0: greedy only)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="parallel compiles")
    _model_options(p)
    p.set_defaults(run=humaneval_command)
    p = group.add_parser("recall", help="passkey and identifier copy at 1x-128x the sliding window")
    p.add_argument("--files", nargs="+", required=True, help="held-out Rust files used as filler")
    p.add_argument("--multiples", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 128])
    p.add_argument("--probes", type=int, default=20)
    p.add_argument("--kinds", type=lambda s: s.split(","), default=["passkey", "identifier"],
                   help="passkey,identifier,line,span,random (line: made-up names copied; span: real code "
                        "repeated, graded per token; random: the same with random token ids; see recall.py)")
    p.add_argument("--fp32", action="store_true",
                   help="no bf16 autocast (CPUs without AVX512-BF16 or AMX: ~25x faster)")
    _model_options(p)
    p.set_defaults(run=recall_command)
    p = group.add_parser("recall-attention", help="where lql attends on recall probes, and top-1 with heads forced to "
                                                  "the answer (recall_attention.py)")
    p.add_argument("--files", nargs="+", required=True, help="held-out Rust files used as filler")
    p.add_argument("--multiple", type=int, default=1, help="the definition this many windows back")
    p.add_argument("--probes", type=int, default=40)
    p.add_argument("--kind", default="identifier", choices=("passkey", "identifier", "line"))
    p.add_argument("--force", nargs="*", default=[], metavar="HEADS",
                   help="head sets to force onto the answer key, each LAYER:HEAD[,LAYER:HEAD…] (HEAD may be *)")
    _model_options(p)
    p.set_defaults(run=recall_attention_command)
    p = group.add_parser("repo-gain", help="bits/byte of files after their packed repository vs alone")
    p.add_argument("--corpus", type=Path, default=Path("corpus"))
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--ctx", type=int, default=16384, help="tokens of packed repository (16K, 64K)")
    p.add_argument("--min-start", type=int, default=4096, help="score files that start this far into the pack")
    p.add_argument("--every", type=int, default=1, help="every Nth crate of the split (with 3 files or more)")
    p.add_argument("--crates", type=int, default=None, help="at most this many crates")
    p.add_argument("--fp32", action="store_true",
                   help="no bf16 autocast (CPUs without AVX512-BF16 or AMX: ~25x faster)")
    _model_options(p)
    p.set_defaults(run=repo_gain_command)
    complete.register_eval(group)
