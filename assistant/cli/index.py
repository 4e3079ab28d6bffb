"""`rustle index PATH [--query NAME]`."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .console import RichReporter, console, progress_console


def update_index(root: Path, db_path: Path, workers: int | None = None, owned: bool = True):
    """Bring `root`'s index up to date with a progress bar (on stderr); the indexer's summary. `owned` False:
    `db_path` was named by the user, and a file there that is not a sound index raises CorruptIndex, untouched."""
    from ..index.indexer import index_workspace

    with RichReporter() as reporter:
        advance = None

        def on_total(n: int) -> None:
            nonlocal advance
            if n:   # an index already up to date draws no empty bar
                advance = reporter.stage("indexing", n)

        return index_workspace(root, db_path, workers, on_total, lambda: advance(1),
                               on_message=lambda m: progress_console.print(f"[yellow]{m}[/]"), owned=owned)


def refused(err: Exception) -> int:
    """The message for a --db file that is not a sound Rustle index (left as it is); the exit status."""
    console.print(f"[red]{err}[/]: Rustle leaves it as it is; name another file with --db, or none")
    return 2


def index_command(args: argparse.Namespace) -> int:
    from ..index.store import CorruptIndex
    from ..index.workspace import default_db

    if not args.root.is_dir():
        console.print(f"[red]not a folder:[/] {args.root}")
        return 2
    db_path, owned = args.db or default_db(args.root), args.db is None
    try:
        return _index(args, db_path, owned)
    except CorruptIndex as err:
        return refused(err)


def _index(args: argparse.Namespace, db_path: Path, owned: bool) -> int:
    from ..index.query import definition_hit
    from ..index.store import open_or_rebuild, search
    from .query import print_hits

    if not args.no_update:
        summary = update_index(args.root, db_path, args.workers, owned)
        if args.json and not args.query:
            print(json.dumps(asdict(summary) | {"db": str(db_path), "db_bytes": db_path.stat().st_size}))
        elif not args.query:
            console.print(f"{summary.files:,} files ({summary.parsed:,} parsed, {summary.unchanged:,} unchanged, "
                          f"{summary.removed:,} removed): {summary.definitions:,} definitions, "
                          f"{summary.references:,} references in {summary.seconds:.2f} s → {db_path}")
    if args.query:
        db = open_or_rebuild(db_path, owned=owned)
        try:
            hits = [definition_hit(s) for s in search(db, args.query, args.limit)]
        finally:
            db.close()
        print_hits(f"'{args.query}' in {args.root}", hits, args.json)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("index", help="index a workspace's Rust files (a C scanner, SQLite); search it")
    p.add_argument("root", type=Path, metavar="PATH")
    p.add_argument("--query", default=None, metavar="NAME", help="search symbols after updating")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--db", type=Path, default=None, help="the index file (default: one per workspace in ~/.cache)")
    p.add_argument("--workers", type=int, default=None, help="parsing processes (default: all cores)")
    p.add_argument("--no-update", action="store_true", help="query the index as it is")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=index_command)
