"""`rustle query PATH 'QUERY' [--json]`: the chat's index queries without the conversation, for scripts."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ..index.query import COMMANDS
from .console import console, table
from .index import update_index

QUERY_HELP = "one of: " + "; ".join(f"{word} {argument}".strip() for word, (argument, _) in COMMANDS.items())


def query_command(args: argparse.Namespace) -> int:
    from ..index.query import QueryError, ask
    from ..index.store import CorruptIndex, open_or_rebuild
    from ..index.workspace import default_db
    from .index import refused

    if not args.root.is_dir():
        console.print(f"[red]not a folder:[/] {args.root}")
        return 2
    db_path, owned = args.db or default_db(args.root), args.db is None
    try:
        update_index(args.root, db_path, owned=owned)
        db = open_or_rebuild(db_path, owned=owned)
    except CorruptIndex as err:
        return refused(err)
    try:
        hits = ask(db, args.root, args.query, args.limit)
    except QueryError as err:
        console.print(f"[red]{err}[/]")
        return 2
    finally:
        db.close()
    print_hits(f"{args.query} in {args.root}", hits, args.json)
    return 0 if hits else 1


def print_hits(title: str, hits: list, as_json: bool) -> None:
    """Index answers (`Hit`s) as JSON lines (path, line, kind, name, signature) or a table."""
    if as_json:
        for hit in hits:
            print(json.dumps(asdict(hit)))
    else:
        console.print(table(title, ["where", "kind", "name", "code"],
                            [[h.location, h.kind, h.name, h.signature] for h in hits]))


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("query", help="ask the repository index: definitions, references, impls, outlines")
    p.add_argument("root", type=Path, metavar="PATH")
    p.add_argument("query", metavar="QUERY", help=QUERY_HELP)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--db", type=Path, default=None, help="the index file (default: one per workspace in ~/.cache)")
    p.add_argument("--json", action="store_true", help="JSON lines: path, line, kind, name, signature")
    p.set_defaults(run=query_command)
