"""The `rustle` command line: argument parsing only; each command group is a module beside this one."""
from __future__ import annotations

import argparse
import logging

from . import bench, chat, complete, corpus, distill, evaluate, index, query, serve, tokenizer, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rustle", description="Local Rust code completion on a small hybrid model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (corpus, tokenizer, train, distill, evaluate, bench, index, query, chat, complete, serve):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from model.io import ModelFolderError

    from .console import console

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except ModelFolderError as err:          # --model names a folder that cannot be loaded: one line, no traceback
        console.print(f"[red]model not loaded:[/] {err}", highlight=False)
        return 2
