"""`rustle serve`: the language server (stdio; `--tcp 127.0.0.1:PORT` for debugging)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .console import console


def serve_command(args: argparse.Namespace) -> int:
    from lsp.server import serve

    if args.model is not None and not (args.model / "config.json").is_file():
        console.print(f"[red]--model {args.model}: not a model folder (no config.json); `rustle finetune` and "
                      "`rustle ship` write one[/]")
        return 2
    try:
        serve(args.tcp, args.device, args.model)
    except ValueError as err:
        console.print(f"[red]{err}[/]")
        return 2
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="the language server: inline completions over stdio")
    p.add_argument("--tcp", default=None, metavar="127.0.0.1:PORT", help="listen on a loopback port instead")
    p.add_argument("--stdio", action="store_true", help="accepted for clients that pass it (stdio is the default)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the model on the GPU")
    p.add_argument("--model", type=Path, default=None,
                   help="the model folder to serve (a fine-tuned one) unless the editor's rustle.model names another")
    p.set_defaults(run=serve_command)
