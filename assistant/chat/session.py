"""One conversation about one workspace: a line in, replies out (the terminal draws them; nothing here draws).

Commands answer from the index with file:line locations; code requests and /complete run through the
completion engine with the whole repository in context; other questions are structural ones (answered from
the index) or retrieve the definitions they name, answered in prose by a local chat model when one is loaded.
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..engine.engine import DEFAULT_MODEL, Engine, EngineConfig, Request
from ..index import store
from ..index.query import COMMANDS, Hit, QueryError, ask, indexed_path
from . import codegen, questions
from .stream import Stream

ENGINE_COMMANDS = {
    "gen": ("WHAT", "code for WHAT, written by the code model with the whole repository in context"),
    "complete": ("FILE:LINE[:COL]", "the code model's suggestion at a place in a file (line, column from 1)"),
}
READING = "the code model reads the repository (kept on disk: only the first time, or after changes)"
SESSION_COMMANDS = {"help": ("", "this list"), "quit": ("", "leave (or Ctrl-D)")}
NO_CHAT_MODEL = ("No chat model is loaded (`rustle chat PATH --model DIR` takes a local Hugging Face chat model). "
                 "The code model writes Rust (`/gen`, `/complete`, or a request such as \"write a function "
                 "that …\") and the index answers where things are defined, used and implemented; it does not "
                 "answer questions in prose. Definitions that your question names:")


@dataclass(frozen=True)
class Hits:
    title: str
    hits: list[Hit]


@dataclass(frozen=True)
class Source:
    path: str
    text: str


@dataclass(frozen=True)
class Note:
    text: str
    error: bool = False


Reply = Hits | Source | Note | Stream


class ChatSession:
    def __init__(self, root: Path, db_path: Path, code_model: Path = DEFAULT_MODEL,
                 chat_model: questions.ChatModel | None = None) -> None:
        self.root, self.db_path, self.code_model, self.chat_model = root.resolve(), db_path, code_model, chat_model
        self._engine: Engine | None = None

    @property
    def commands(self) -> dict[str, tuple[str, str]]:
        return {**COMMANDS, **ENGINE_COMMANDS, **SESSION_COMMANDS}

    def engine(self) -> Engine:
        """The completion engine, loaded on the first code request."""
        if self._engine is None:   # the server's mode: the repository's state is kept on disk for the next start
            self._engine = Engine(self.code_model, EngineConfig(background=True, persist=True))
        return self._engine

    def totals(self) -> tuple[int, int]:
        """(files, definitions) indexed."""
        with self._db() as db:
            return store.totals(db)

    def names(self) -> list[str]:
        """Symbol names for tab completion."""
        with self._db() as db:
            return store.symbol_names(db)

    def reply(self, line: str) -> list[Reply]:
        """The replies to one line of input; errors come back as notes, never as exceptions."""
        line = line.strip()
        if not line:
            return []
        try:
            if line.startswith("/"):
                return self._command(line[1:])
            if questions.asks_for_code(line):
                return [self._generate(line)]
            return self._question(line)
        except (QueryError, ValueError, OSError) as err:
            return [Note(str(err), error=True)]

    def _command(self, text: str) -> list[Reply]:
        word, _, argument = text.partition(" ")
        argument = argument.strip()
        if word == "help":
            return [Note("\n".join(f"/{w} {a}".ljust(28) + d for w, (a, d) in self.commands.items()))]
        if word in ENGINE_COMMANDS and not argument:
            raise QueryError(f"'/{word}' needs {ENGINE_COMMANDS[word][0]}")
        if word == "gen":
            return [self._generate(argument)]
        if word == "complete":
            return [self._complete(argument)]
        with self._db() as db:
            if word == "file":
                path = indexed_path(db, self.root, argument)
                return [Source(path, (self.root / path).read_text(encoding="utf-8", errors="replace"))]
            hits = ask(db, self.root, text)
        return [Hits(f"/{text}", hits) if hits else Note(f"nothing found for /{text}")]

    def _question(self, question: str) -> list[Reply]:
        with self._db() as db:
            query = questions.structural(question)
            if query is not None:
                hits = ask(db, self.root, query)
                return [Hits(query, hits) if hits else Note(f"the index has nothing for '{query}'")]
            hits = questions.retrieve(db, question)
        if not hits:
            return [Note("No definition in the index matches the question's words; try /find NAME.")]
        shown = Hits("definitions the question names", hits)
        if self.chat_model is None:
            return [Note(NO_CHAT_MODEL), shown]
        context, model = questions.context_of(self.root, hits), self.chat_model
        return [shown, Stream("markdown", lambda on_text, stopped: model.answer(question, context, on_text, stopped),
                              f"{model.name}:")]

    def _generate(self, what: str) -> Stream:
        with self._db() as db:
            placement = codegen.place(db, self.root, what)
        engine = self.engine()
        return Stream("rust", lambda on_text, stopped: codegen.generate(engine, self.root, placement, on_text, stopped),
                      status=READING)

    def _complete(self, location: str) -> Stream:
        file, line, column = _location(location)
        with self._db() as db:
            path = indexed_path(db, self.root, file)
        text = (self.root / path).read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        if line >= len(lines) or column > len(lines[line]):
            raise ValueError(f"{location}: past the end of {path} ({len(lines)} lines)")
        column = len(lines[line]) if column < 0 else column
        offset = sum(len(x) + 1 for x in lines[:line]) + column
        engine, request = self.engine(), Request(self.root, path, text, offset)

        def complete(on_text, stopped) -> str:
            if not engine.prepare(self.root, path, stopped):
                return ""
            return engine.complete_sync(request, on_text, stopped).text
        return Stream("rust", complete, status=READING)

    def _db(self) -> closing[store.Connection]:
        """The index, open for one reply (the indexer of `rustle serve` may write it between replies)."""
        return closing(store.connect(self.db_path))


def _location(location: str) -> tuple[str, int, int]:
    """FILE:LINE[:COL], from 1 → (file, 0-based line, 0-based column; -1 without one: the line's end)."""
    parts = location.rsplit(":", 2)
    numbers = [p for p in parts[1:] if p.isdigit()]
    if not numbers or any(int(n) < 1 for n in numbers):
        raise ValueError(f"'{location}' is not FILE:LINE[:COL] (line and column from 1)")
    file = location[:len(location) - sum(len(n) + 1 for n in numbers)]
    line = int(numbers[0]) - 1
    return file, line, (int(numbers[1]) - 1 if len(numbers) > 1 else -1)
