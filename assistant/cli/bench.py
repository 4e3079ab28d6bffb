"""`rustle bench …`: benchmarks that print numbers."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from model import DEFAULT_MODEL
from tokenizer import DEFAULT_TOKENIZER, load_tokenizer

from .console import console, table
from .complete import guide_arguments, prompt_arguments, with_guide, with_prompt


def tokenizer_command(args: argparse.Namespace) -> int:
    from ..lab.bench import tokenizers as bench
    from ..lab.corpus.shards import texts

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


def kernels_command(args: argparse.Namespace) -> int:
    import torch

    from ..lab.bench.kernels import measure, measure_gpu

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    cuda = args.device == "cuda"
    for row in measure_gpu(args.contexts) if cuda else measure(args.contexts, tuple(args.steps), args.repeats):
        rows.append(row)
        if args.json:
            print(json.dumps(asdict(row)), flush=True)
    if not args.json:
        where = torch.cuda.get_device_name() + ", bf16" if cuda else f"fp32, {torch.get_num_threads()} threads"
        console.print(table(f"Attention kernels, {where}", ["kernel", "layer", "context", "T",
                                                                                "ms", "GFLOP/s", "GB/s"],
                            [[r.kernel, r.layer, r.context, r.rows, f"{r.ms:.2f}", f"{r.gflops:.1f}",
                              f"{r.gbps:.1f}"] for r in rows]))
    return 0


def roundtrip_command(args: argparse.Namespace) -> int:
    from ..lab.bench.tokenizers import roundtrip
    from ..lab.corpus.shards import texts

    tok = load_tokenizer(args.tokenizer)
    results = {split: roundtrip(tok, texts(args.corpus, split)) for split in ("train", "validation", "test")}
    ok, total = sum(r[0] for r in results.values()), sum(r[1] for r in results.values())
    if args.json:
        print(json.dumps({"tokenizer": args.tokenizer.name, "lossless_files": ok, "files": total}))
    else:
        console.print(table(f"decode(encode(x)) == x with {args.tokenizer.name}", ["split", "lossless", "files"],
                            [[s, r[0], r[1]] for s, r in results.items()] + [["all", ok, total]]))
    return 0 if ok == total else 1


def model_command(args: argparse.Namespace) -> int:
    import torch

    from model.config import ModelConfig
    from model.model import count_parameters
    from model.precision import fast_dtype

    from ..lab.bench.model import measure, models

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ModelConfig.load(args.config) if args.config else ModelConfig()
    rows = []
    dtype = fast_dtype(args.dtype, args.device)
    for name, model in models(config, dtype, args.device).items():
        if not args.json:
            console.print(f"[dim]{name}: {count_parameters(model.config):,} parameters, "
                          f"pattern {','.join(model.config.layer_pattern)}[/]", highlight=False)
        for context in args.contexts:
            limit = args.prefill_limit if name == "hybrid" else args.twin_prefill_limit
            row = measure(model, name, context, limit)
            rows.append(row)
            if args.json:
                print(json.dumps(asdict(row)), flush=True)
            else:
                console.print(row)
    if not args.json:
        console.print(table(f"Hybrid vs twin, {dtype}, batch 1", ["model", "context", "decode ms/token",
                                                             "prefill tokens/s", "cache bytes"],
                            [[r.model, r.context, r.decode_ms_per_token,
                              "n/a" if r.prefill_tokens_per_s is None else f"{r.prefill_tokens_per_s:,.0f}",
                              r.cache_bytes] for r in rows]))
    return 0


RECALL_PATTERNS = {
    "swa only": ("swa", "swa"),
    "gdn + swa": ("gdn", "swa"),
    "swa + full": ("swa", "full"),
    "swa + lql": ("swa", "lql"),
    "gdn, swa, gdn, lql": ("gdn", "swa", "gdn", "lql"),
}


def recall_command(args: argparse.Namespace) -> int:
    from ..lab.bench.recall import RecallTask, train_and_score

    task = RecallTask(window=args.window)
    rows = []
    for name, pattern in RECALL_PATTERNS.items():
        accuracy, longer, steps = train_and_score(pattern, task, args.seconds)
        row = {"pattern": name, "layers": list(pattern), "window": task.window,
               "distance": task.gap_windows * task.window, "accuracy": accuracy,
               "accuracy_at_12_windows": longer, "steps": steps}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        console.print(table(f"MQAR: {task.pairs} pairs recalled across {task.gap_windows}× a window of {task.window} "
                            f"(chance {1 / task.values:.3f})", ["pattern", "accuracy", "at 12× (untrained length)",
                                                                "training steps"],
                            [[r["pattern"], r["accuracy"], r["accuracy_at_12_windows"], r["steps"]] for r in rows]))
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from ..lab.bench.compare import VARIANTS, compare
    from ..lab.train.config import TrainConfig

    unknown = [v for v in args.variants or [] if v not in VARIANTS]
    if unknown:
        console.print(f"[red]unknown variants {unknown}[/]: choose from {list(VARIANTS)}")
        return 2
    held_out = []
    for f in args.files:
        try:
            held_out.append(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            console.print(f"[yellow]skipping {f}:[/] {err}")
    base = TrainConfig.from_toml(args.config)
    on_row = (lambda r: print(json.dumps(asdict(r)), flush=True)) if args.json else console.print
    rows = compare(base, args.out or base.out, held_out, args.variants, on_row)
    if not args.json:
        console.print(table(f"Five-way comparison: {rows[0].parameters:,} parameters, {rows[0].tokens:,} tokens each",
                            ["variant", "bits/byte", "recall 4×", "recall 16×", "decode ms 8K", "decode ms 32K",
                             "cache MB 32K", "train s"],
                            [[r.variant, f"{r.bits_per_byte:.4f}", r.recall_4x, r.recall_16x,
                              f"{r.decode_ms_8k:.1f}", f"{r.decode_ms_32k:.1f}", f"{r.cache_bytes_32k / 2**20:.1f}",
                              f"{r.train_seconds:.0f}"] for r in rows]))
    return 0


def index_command(args: argparse.Namespace) -> int:
    from ..lab.bench.index import run

    row = run(args.root, args.workers)
    if args.json:
        print(json.dumps(asdict(row)))
    else:
        console.print(row)
    return 0


def scan_command(args: argparse.Namespace) -> int:
    from ..lab.bench.scan import run

    row = run(args.root, args.every)
    print(json.dumps(asdict(row)) if args.json else row)
    return 0


def latency_command(args: argparse.Namespace) -> int:
    from ..lab.bench.latency import measure
    from ..engine.engine import EngineConfig

    config = with_guide(with_prompt(EngineConfig(max_new_tokens=args.max_tokens), args), args)
    report = measure(args.root, args.file, args.other, args.model, config,
                     cursors=args.cursors, keystrokes=args.keystrokes)
    print(json.dumps(report.summary()) if args.json else report.summary())
    return 0


def nvim_command(args: argparse.Namespace) -> int:
    from ..lab.bench.nvim import keystrokes

    result = keystrokes(args.root, args.file, args.lines, args.debounce_ms)
    print(json.dumps(result) if args.json else result)
    return 0


def serve_memory_command(args: argparse.Namespace) -> int:
    from ..lab.bench.serve_memory import session

    report = session(args.root, args.rounds, args.every, model=args.model)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        console.print(f"{report.rounds} rounds on {report.files} files ({report.answered} answered) "
                      f"in {report.seconds:.0f} s; RSS MiB by round: "
                      + ", ".join(f"{r}: {mib:.0f}" for r, mib in report.rss_mib))
    return 0


def fuzz_command(args: argparse.Namespace) -> int:
    from ..lab.bench.fuzz import session

    report = session(args.messages, args.batch, args.seed, model=args.model, every=args.every)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        console.print(f"{report.messages} hostile messages, {report.requests} of them requests: {report.answered} "
                      f"answered (errors by code: {report.errors}); {report.probes_equal}/{report.probes} probes "
                      f"gave the first probe's suggestion; exit {report.exit_status}, {report.tracebacks} tracebacks; "
                      f"{report.seconds:.0f} s; RSS MiB after N messages: "
                      + ", ".join(f"{n}: {mib:.0f}" for n, mib in report.rss_mib))
    whole = report.answered == report.requests and report.probes_equal == report.probes
    return 0 if whole and report.exit_status == 0 and not report.tracebacks else 1


def train_step_command(args: argparse.Namespace) -> int:
    from ..lab.bench.train_step import time_steps
    from ..lab.train.ship import shipped_recipe
    from .train import load_recipe

    if args.config is None:
        args.config = shipped_recipe(DEFAULT_MODEL)
        if args.config is None:
            console.print(f"[red]no single recipe (*.toml) at the top of {DEFAULT_MODEL}:[/] pass --config")
            return 2
    config = load_recipe(args.config)
    if config is None:
        return 2
    seq_len = args.seq_len or config.seq_len(0)
    rows = []
    for mode in args.modes:
        row = time_steps(config, seq_len, mode == "compiled", args.steps)
        rows.append(row)
        if args.json:
            print(json.dumps(asdict(row)), flush=True)
    if not args.json:
        title = f"Training steps of {args.config} ({rows[0].batch_tokens:,} tokens, {seq_len:,}-token windows)"
        console.print(table(title,
                            ["mode", "first step s", "median step s", "tokens/s"],
                            [["compiled" if r.compiled else "eager", f"{r.first_step_s:.1f}",
                              f"{sorted(r.step_s)[len(r.step_s) // 2]:.2f}", f"{r.tokens_per_s:,.0f}"] for r in rows]))
    return 0


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
    p = group.add_parser("model", help="decode, prefill and cache size: default hybrid vs its full-attention twin")
    p.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 8192, 32768, 131072])
    p.add_argument("--config", type=Path, default=None, help="a config.json (default: the default recipe)")
    p.add_argument("--prefill-limit", type=int, default=131072, help="hybrid: longest context prefilled for real")
    p.add_argument("--twin-prefill-limit", type=int, default=32768, help="twin: longest context prefilled for real")
    p.add_argument("--threads", type=int, default=None,
                   help="default: PyTorch's (OMP_NUM_THREADS, else the cores)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="as the engine serves (auto: bf16 on a GPU, fp32 on a CPU; model/precision.py)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=model_command)
    p = group.add_parser("kernels", help="the attention kernels against PyTorch's (decode, draft, line; "
                                         "prefill on CUDA)")
    p.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[2048, 8192, 32768, 131072])
    p.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32],
                   help="query positions per call")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None,
                   help="default: PyTorch's (OMP_NUM_THREADS, else the cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: Triton against PyTorch, bf16")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=kernels_command)
    p = group.add_parser("recall", help="multi-query associative recall at 4x the window, tiny models")
    p.add_argument("--seconds", type=float, default=60, help="training time per pattern")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=recall_command)
    p = group.add_parser("train-step", help="training throughput of a recipe's model: eager and compiled steps")
    p.add_argument("--config", type=Path, default=None, help="a recipe (default: the shipped model's own)")
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: the recipe's first)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after a first (compiling) one")
    p.add_argument("--modes", type=lambda s: s.split(","), default=["eager", "compiled"], help="eager,compiled")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=train_step_command)
    p = group.add_parser("compare", help="five layer mixes trained at equal parameters and tokens, then scored")
    p.add_argument("--config", type=Path, default=Path("data/compare.toml"), help="the shared recipe")
    p.add_argument("--files", type=Path, nargs="+", required=True, help="held-out Rust files (bits/byte, recall)")
    p.add_argument("--variants", nargs="+", default=None, metavar="NAME", help="a subset, by name")
    p.add_argument("--out", type=Path, default=None, help="where the runs go (default: the recipe's out)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=compare_command)
    p = group.add_parser("index", help="the index against Universal Ctags on one tree; one-file re-index time")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=index_command)
    p = group.add_parser("scan", help="the index's C scanner against tree-sitter: agreement and speed")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--every", type=int, default=10, help="every Nth Rust file of the tree")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=scan_command)
    p = group.add_parser("latency", help="completion latency on a repository: first open, reopen, new cursor, "
                                         "keystroke, file switch")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--file", required=True, help="the file to complete in, relative to --root")
    p.add_argument("--other", required=True, help="another file of --root, visited between cursors of --file")
    p.add_argument("--cursors", type=int, default=20)
    p.add_argument("--keystrokes", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=24)
    guide_arguments(p)
    prompt_arguments(p)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=latency_command)
    p = group.add_parser("nvim", help="keystroke-to-ghost-text latency in a real headless Neovim")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--file", required=True, help="relative to --root")
    p.add_argument("--lines", type=lambda s: [int(x) for x in s.split(",")], required=True,
                   help="1-based lines to retype, comma-separated")
    p.add_argument("--debounce-ms", type=int, default=30)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=nvim_command)
    p = group.add_parser("serve-memory", help="the language server's RSS over a long editing session")
    p.add_argument("--root", type=Path, required=True, help="a workspace; every .rs file is opened")
    p.add_argument("--rounds", type=int, default=1000, help="edit + inline completion rounds")
    p.add_argument("--every", type=int, default=100, help="sample RSS every this many rounds")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=serve_memory_command)
    p = group.add_parser("fuzz", help="hostile messages to the language server: every request answered, RSS flat")
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100, help="hostile messages between two valid probes")
    p.add_argument("--every", type=int, default=2000, help="sample the server's RSS every this many messages")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=fuzz_command)
