"""`rustle chat [PATH] [--model DIR]`: the terminal side of a conversation (assistant/chat/session.py answers).

readline gives line editing, history (up arrow; saved per workspace in ~/.cache/rustle/chat) and tab
completion of commands and symbol names; rich draws tables of locations, highlighted code and Markdown, and
streams answers as they grow. Ctrl-C stops the answer being written, not the conversation; Ctrl-D leaves.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.syntax import Syntax
from rich.table import Table

from .console import console
from .index import update_index

PROMPT = "rustle> "


def chat_command(args: argparse.Namespace) -> int:
    from ..chat.questions import ChatModel
    from ..chat.session import ChatSession
    from ..index.workspace import cache_dir, default_db

    root = args.root.resolve()
    if not root.is_dir():
        console.print(f"[red]not a folder:[/] {args.root}")
        return 2
    db_path = default_db(root)
    if update_index(root, db_path).files == 0:
        console.print(f"[red]no Rust files in {root}[/] (an empty workspace: nothing to talk about)")
        return 2
    chat_model = None
    if args.model is not None:
        try:
            with console.status(f"loading {args.model}"):
                chat_model = ChatModel(args.model)
        except ValueError as err:
            console.print(f"[red]{err}[/]")
            return 2
    session = ChatSession(root, db_path, args.code_model, chat_model)
    history = cache_dir() / "chat" / f"{hashlib.blake2b(str(root).encode(), digest_size=8).hexdigest()}.history"
    _readline_setup(history, ["/" + c for c in session.commands], session.names())
    files, definitions = session.totals()
    console.print(f"[bold]{root.name}[/]: {files:,} files, {definitions:,} definitions indexed"
                  f"{f'; chat model {chat_model.name}' if chat_model else ''}. /help lists the commands.")
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            console.print()
            return 0
        except KeyboardInterrupt:          # Ctrl-C at the prompt: a fresh line, as in a shell
            console.print()
            continue
        if line.strip() in ("/quit", "/exit"):
            return 0
        for reply in session.reply(line):
            _show(reply)
        _save_history(history)


def _show(reply) -> None:
    from ..chat.session import Hits, Note, Source
    from ..chat.stream import Stream

    if isinstance(reply, Note):
        console.print(reply.text, style="red" if reply.error else None, markup=False, highlight=False)
    elif isinstance(reply, Hits):
        table = Table(title=reply.title, title_justify="left", show_edge=False)
        for column in ("where", "kind", "name", "code"):
            table.add_column(column, overflow="fold")
        for hit in reply.hits:
            table.add_row(hit.location, hit.kind, hit.name, hit.signature)
        console.print(table)
    elif isinstance(reply, Source):
        console.print(f"[bold]{reply.path}[/]")
        console.print(Syntax(reply.text, "rust", line_numbers=True))
    elif isinstance(reply, Stream):
        _stream(reply)


def _stream(stream) -> None:
    """Draw the answer as it grows; Ctrl-C stops it and keeps what was written."""
    def draw(text: str):
        if not text and stream.status:
            return Spinner("dots", stream.status, style="dim")
        return Syntax(text, "rust") if stream.language == "rust" else Markdown(text)

    if stream.title:
        console.print(stream.title, style="bold", highlight=False)
    text = ""
    with Live(draw(text), console=console, refresh_per_second=8, transient=False) as live:
        try:
            for text in stream.texts():
                live.update(draw(text))
        except KeyboardInterrupt:
            stream.stop()
            live.update(draw(text))
            live.stop()
            console.print("[yellow]^C: stopped[/]")
    if stream.error is not None:
        console.print(f"[red]{stream.error}[/]", highlight=False)


def _readline_setup(history: Path, commands: list[str], names: list[str]) -> None:
    try:
        import readline
    except ImportError:                    # no readline (Windows): plain input, no history or completion
        return
    history.parent.mkdir(parents=True, exist_ok=True)
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    words = sorted(set(commands) | set(names))

    def complete(text: str, state: int) -> str | None:
        matches = [w for w in words if w.startswith(text)]
        return matches[state] + " " if state < len(matches) else None   # a space, as a shell completes a word

    readline.set_completer_delims(" \t\n:")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")


def _save_history(history: Path) -> None:
    try:
        import readline

        readline.set_history_length(1000)
        readline.write_history_file(history)
    except (ImportError, OSError):
        pass


def register(commands: argparse._SubParsersAction) -> None:
    from ..engine.engine import DEFAULT_MODEL

    p = commands.add_parser("chat", help="talk about a codebase in the terminal: index queries, code, questions")
    p.add_argument("root", type=Path, metavar="PATH", nargs="?", default=Path("."))
    p.add_argument("--model", type=Path, default=None,
                   help="a local Hugging Face chat model folder for answers in prose (loaded offline)")
    p.add_argument("--code-model", type=Path, default=DEFAULT_MODEL, help="the completion model (default: shipped)")
    p.set_defaults(run=chat_command)
