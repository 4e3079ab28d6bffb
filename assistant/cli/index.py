"""`rustle index PATH [--query NAME]`."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .console import RichReporter, console, progress_console


def update_index(root: Path, db_path: Path, workers: int | None = None):
    """Bring `root`'s index up to date with a progress bar (on stderr); the indexer's summary."""
    from ..index.indexer import index_workspace

    with RichReporter() as reporter:
        advance = None

        def on_total(n: int) -> None:
            nonlocal advance
            advance = reporter.stage("indexing", n)

        return index_workspace(root, db_path, workers, on_total, lambda: advance(1),
                               on_message=lambda m: progress_console.print(f"[yellow]{m}[/]"))


def index_command(args: argparse.Namespace) -> int:
    from ..index.query import definition_hit
    from ..index.store import open_or_rebuild, search
    from ..index.workspace import default_db
    from .query import print_hits

    if not args.root.is_dir():
        console.print(f"[red]not a folder:[/] {args.root}")
        return 2
    db_path = args.db or default_db(args.root)
    if not args.no_update:
        summary = update_index(args.root, db_path, args.workers)
        if args.json and not args.query:
            print(json.dumps(asdict(summary) | {"db": str(db_path), "db_bytes": db_path.stat().st_size}))
        elif not args.query:
            console.print(f"{summary.files:,} files ({summary.parsed:,} parsed, {summary.unchanged:,} unchanged, "
                          f"{summary.removed:,} removed): {summary.definitions:,} definitions, "
                          f"{summary.references:,} references in {summary.seconds:.2f} s → {db_path}")
    if args.query:
        db = open_or_rebuild(db_path)
        try:
            hits = [definition_hit(s) for s in search(db, args.query, args.limit)]
        finally:
            db.close()
        print_hits(f"'{args.query}' in {args.root}", hits, args.json)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("index", help="index a workspace's Rust files (tree-sitter, SQLite); search it")
    p.add_argument("root", type=Path, metavar="PATH")
    p.add_argument("--query", default=None, metavar="NAME", help="search symbols after updating")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--db", type=Path, default=None, help="the index file (default: one per workspace in ~/.cache)")
    p.add_argument("--workers", type=int, default=None, help="parsing processes (default: all cores)")
    p.add_argument("--no-update", action="store_true", help="query the index as it is")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=index_command)
