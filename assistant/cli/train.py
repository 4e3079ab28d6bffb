"""`rustle train --config FILE.toml [--resume]`."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .console import console, progress_console

if TYPE_CHECKING:  # imported where used: the CLI starts without loading torch
    from ..lab.train.config import TrainConfig


def load_recipe(path: Path) -> TrainConfig | None:
    """The TrainConfig of a TOML recipe, or None after saying what is wrong with it."""
    from ..lab.train.config import TrainConfig

    try:
        return TrainConfig.from_toml(path)
    except (OSError, ValueError, TypeError) as err:
        console.print(f"[red]bad config {path}:[/] {err}")
        return None


def train_command(args: argparse.Namespace) -> int:
    import torch

    from ..lab.train.loop import train
    from ..lab.train.plot import plot_losses

    config = load_recipe(args.config)
    if config is None:
        return 2
    if args.pack_only:
        return _pack(config)
    if args.fp32:
        config = replace(config, bf16=False)
    if args.max_seconds is not None:
        config = replace(config, max_seconds=args.max_seconds)
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = Progress(TextColumn("[bold]train"), BarColumn(),
                        TextColumn("{task.completed:,.0f}/{task.total:,.0f} tok"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=progress_console)
    task = progress.add_task("train", total=config.total_tokens, info="")

    def on_log(row: dict) -> None:
        info = f"loss {row['loss']:.3f} {row['tokens_per_s']:,.0f} tok/s"
        if "val_loss" in row:
            progress.console.print(f"{row['tokens']:>12,} tokens  val loss {row['val_loss']:.4f}  "
                                   f"{row['val_bits_per_byte']:.4f} bits/byte")
        progress.update(task, completed=row["tokens"], total=row["total_tokens"], info=info)

    try:
        with progress:
            state, _ = train(config, resume=args.resume, on_log=on_log, max_steps=args.max_steps)
    except (FileNotFoundError, FloatingPointError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    if (config.out / "metrics.jsonl").is_file():
        plot_losses(config.out / "metrics.jsonl", config.out / "loss.png")
    console.print(f"{state.tokens:,} tokens in {state.step:,} steps; best validation loss {state.best_val_loss:.4f}; "
                  f"checkpoint in {config.out / 'checkpoint'}")
    return 0


def _pack(config: TrainConfig) -> int:
    """The recipe's token files in its run folder (what a lent GPU is sent), without training."""
    from ..lab.train.data import prepare_tokens

    try:
        paths = prepare_tokens(config.out / "tokens", config.corpus, config.tokenizer, config.pack)
    except FileNotFoundError as err:
        console.print(f"[red]{err}[/]")
        return 2
    for split, path in paths.items():
        console.print(f"{split}: {path} ({path.stat().st_size // 2:,} tokens)")
    return 0


def ship_command(args: argparse.Namespace) -> int:
    from ..lab.train.ship import ship

    try:
        metadata = ship(args.run_dir, args.to, args.recipe)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    console.print(f"shipped {args.run_dir} to {args.to}: {metadata['cumulative_tokens']:,} tokens seen")
    return 0


def gpu_pack_command(args: argparse.Namespace) -> int:
    import subprocess

    from ..lab.train.gpu import DEVICE_TREE_BYTES, TREE_MARGIN, download_wheels, pack, pack_tokens, travelling_bytes

    try:
        if not args.no_wheels:      # first: they travel in the same budget
            download_wheels(args.out)
        if args.tokens is not None:   # packed already: the device needs no corpus
            wheels = sum(p.stat().st_size for p in args.out.glob("wheels/*"))
            budget = (int(args.max_mib * 2**20) if args.max_mib is not None else
                      DEVICE_TREE_BYTES - TREE_MARGIN - travelling_bytes(Path.cwd()) - wheels)
            size, kept, count = pack_tokens(args.tokens, args.out, budget)
            what = "token files" + (f" ({kept:,} of the {count:,} training tokens, spread over them: all would not "
                                    f"fit in {budget / 2**20:.1f} MiB)" if kept < count else "")
        else:
            size, what = pack(args.corpus, args.out), "shards"
    except (FileNotFoundError, ValueError, subprocess.CalledProcessError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    console.print(f"{size / 2**20:.1f} MiB of compressed {what} in {args.out}; send with carry [\"{args.out}\"] "
                  f"and the command data/gpu/run.sh RECIPE \"$OUT\"")
    return 0


def gpu_receive_command(args: argparse.Namespace) -> int:
    from ..lab.train.gpu import receive

    missing = [p for p in args.parts if not p.is_file()]
    if missing:
        console.print(f"[red]no such part:[/] {', '.join(map(str, missing))}")
        return 2
    console.print(f"model folder: {receive(args.parts, args.to)}")
    return 0


def finetune_command(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    import torch

    from ..lab.train.finetune import FinetuneConfig, finetune

    missing = [p for p in args.repos if not p.is_dir()]
    if missing:
        console.print(f"[red]not a folder:[/] {', '.join(map(str, missing))}")
        return 2
    if args.epochs is not None and not args.epochs > 0:
        console.print(f"[red]--epochs {args.epochs}: expected a number above 0[/]")
        return 2
    if args.threads is not None and args.threads < 1:
        console.print(f"[red]--threads {args.threads}: expected a whole number of at least 1[/]")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    given = {"tokens": args.tokens, "epochs": args.epochs, "lr": args.lr, "seq_len": args.seq_len,
             "batch_tokens": args.batch_tokens, "patience": args.patience}
    config = FinetuneConfig(repos=args.repos, out=args.out, model=args.model,
                            **{name: value for name, value in given.items() if value is not None})
    try:
        report = finetune(config)
    except (FileNotFoundError, ValueError, FloatingPointError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        console.print(f"held-out bits/byte {report.bits_per_byte_before:.4f} → {report.bits_per_byte_after:.4f} "
                      f"on {report.held_out_files} files after {report.tokens:,} tokens; model: {report.model}"
                      f"{'' if report.tuned else ' (the base weights: fine-tuning did not help)'}")
    return 0


def train_memory_command(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    import torch

    from model.io import MEMORY, MEMORY_LOG, load_model, save_memory
    from tokenizer import tokenizer_of

    from ..lab.train.data import crates
    from ..lab.train.memory_fit import MemoryFitConfig, fit_memory

    try:
        config = MemoryFitConfig.from_toml(args.config)
        model = load_model(args.model)
    except (OSError, ValueError, TypeError) as err:          # ModelFolderError is a ValueError
        console.print(f"[red]{err}[/]")
        return 2
    if model.config.memory_weight <= 0:
        console.print(f"[red]{args.model}: the memory is off (memory_weight 0 in config.json): nothing to fit[/]")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [{"recipe": str(args.config), "config": asdict(config)}]

    def log(row: dict) -> None:
        rows.append(row)
        console.print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    try:
        reader, report = fit_memory(model, tokenizer_of(args.model), crates(args.corpus, "train"),
                                    crates(args.corpus, "validation"), config, log)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/]")
        return 2
    save_memory(reader, args.model / MEMORY, {"recipe": args.config.name})
    (args.model / MEMORY_LOG).write_text("".join(json.dumps(row) + "\n" for row in rows))
    if args.json:
        print(json.dumps(report))
    console.print(f"fitted memory reader in {args.model / MEMORY}; its log in {args.model / MEMORY_LOG}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train a model from a TOML recipe")
    p.add_argument("--config", type=Path, required=True, help="the run's recipe (see model/checkpoints/*/train.toml)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    p.add_argument("--pack-only", action="store_true",
                   help="write the recipe's token files (RUN/tokens, for rustle gpu-pack) and stop")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="a wall-clock budget: the run's token total is cut to what fits (the recipe's max_seconds)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fp32", action="store_true",
                   help="train in fp32 whatever the recipe says (CPUs without BF16 instructions: bf16 autocast "
                        "is many times slower there, see BENCHMARKS.md)")
    p.set_defaults(run=train_command)
    from model import DEFAULT_MODEL

    p = commands.add_parser("finetune", help="continue a model on a team's repositories (held-out files scored)")
    p.add_argument("--repos", nargs="+", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="work folder; the new model lands in OUT/model")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--tokens", type=int, default=None, help="training tokens at most (default 2M)")
    p.add_argument("--epochs", type=float, default=None,
                   help="passes over the training files' tokens, --tokens at most (default 3)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4)")
    p.add_argument("--seq-len", type=int, default=None, help="window length in tokens (default 4096)")
    p.add_argument("--batch-tokens", type=int, default=None, help="tokens a step (default 4096)")
    p.add_argument("--patience", type=int, default=None,
                   help="evaluations without improvement before stopping (default 3)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=finetune_command)
    p = commands.add_parser("ship", help="copy a run's checkpoint and record into a model folder")
    p.add_argument("run_dir", metavar="RUN", type=Path, help="the run's out folder")
    p.add_argument("--to", type=Path, required=True, help="the model folder, e.g. model/checkpoints/NAME")
    p.add_argument("--recipe", type=Path, default=None, help="the run's TOML, copied beside the weights")
    p.set_defaults(run=ship_command)
    p = commands.add_parser("train-memory", help="fit the model's memory reader (its keys and gate) to its weights")
    p.add_argument("--config", type=Path, required=True, help="the fit's recipe, e.g. data/memory/rustle-small.toml")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the model folder; memory.safetensors lands there")
    p.add_argument("--corpus", type=Path, default=Path("corpus"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the report (validation nats per token) as JSON")
    p.set_defaults(run=train_memory_command)
    p = commands.add_parser("gpu-pack", help="compress the corpus's shards for a run on a lent GPU (data/gpu/run.sh)")
    p.add_argument("--corpus", type=Path, default=Path("corpus"))
    p.add_argument("--out", type=Path, default=Path("gpu"))
    p.add_argument("--no-wheels", action="store_true", help="do not download the wheels the device lacks")
    p.add_argument("--tokens", type=Path, default=None,
                   help="send a run's packed token files (RUN/tokens, packed as the recipe packs) instead of shards")
    p.add_argument("--max-mib", type=float, default=None,
                   help="with --tokens: compressed token files in this many MiB at most (default: what the device's "
                        "64 MiB leaves beside this repository's working tree and the wheels)")
    p.set_defaults(run=gpu_pack_command)
    p = commands.add_parser("gpu-receive", help="join the parts a GPU run sent back into a model folder")
    p.add_argument("parts", nargs="+", type=Path, metavar="PART", help="run.tar.000 run.tar.001 …")
    p.add_argument("--to", type=Path, required=True, help="the folder that receives model/")
    p.set_defaults(run=gpu_receive_command)
