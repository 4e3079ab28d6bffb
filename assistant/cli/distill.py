"""`rustle distill`: a full-attention model (ours, or a Hugging Face Llama/Qwen2 folder) into a hybrid."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .console import console, table


def distill_command(args: argparse.Namespace) -> int:
    from model.convert import from_hf, is_hf_checkpoint
    from model.io import load_model, save_model
    from tokenizer import load_tokenizer, tokenizer_folder

    from ..lab.train.data import PackConfig, load_tokens, prepare_tokens
    from ..lab.train.distill import DistillConfig, distill

    try:
        teacher = from_hf(args.teacher) if is_hf_checkpoint(args.teacher) else load_model(args.teacher)
    except (FileNotFoundError, ValueError, KeyError) as err:
        console.print(f"[red]cannot load the teacher {args.teacher}:[/] {err}")
        return 2
    tokenizer = tokenizer_folder(args.teacher)
    tok = load_tokenizer(tokenizer)
    if tok.get_vocab_size() > teacher.config.vocab_size:
        console.print(f"[red]{tokenizer} has {tok.get_vocab_size()} tokens, the teacher only "
                      f"{teacher.config.vocab_size}[/]")
        return 2
    paths = prepare_tokens(args.out / "tokens", args.corpus, tokenizer, PackConfig(fim_rate=0.0))
    data = {split: load_tokens(path) for split, path in paths.items()}
    config = DistillConfig(replacement=args.replacement, seq_len=args.seq_len, windows=args.windows,
                           steps=args.steps, budget=args.budget)
    try:
        hybrid, report = distill(teacher, data["train"], data["validation"], config)
    except ValueError as err:
        console.print(f"[red]{err}[/]")
        return 2
    save_model(hybrid, args.out / "model", tokenizer)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        console.print(table("Distill-then-Replace", ["placement", "pattern", "validation loss"], [
            ["teacher", "full × " + str(len(report.chosen_pattern)), report.teacher_val_loss],
            ["greedy (chosen)", ",".join(report.chosen_pattern), report.chosen_val_loss],
            ["uniform 3:1", ",".join(report.uniform_pattern), report.uniform_val_loss]]))
        console.print(f"hybrid written to {args.out / 'model'}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("distill", help="distill a full-attention model's layers into gdn/swa and replace greedily")
    p.add_argument("--teacher", type=Path, required=True, help="our model folder or a HF Llama/Qwen2 folder")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replacement", choices=["gdn", "swa"], default="gdn")
    p.add_argument("--budget", type=float, default=0.02, help="allowed relative rise of validation loss")
    p.add_argument("--steps", type=int, default=200, help="distillation steps per layer")
    p.add_argument("--windows", type=int, default=64, help="recorded windows of activations")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=distill_command)
