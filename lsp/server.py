"""`rustle serve`: a pygls language server that streams completions from the engine into editors.

- `textDocument/inlineCompletion` (ghost text) and `textDocument/completion` (one item with a text edit);
- the workspace is indexed in the background on `initialized`, with `$/progress`; saves and watched-file
  events re-index one file; settings come from initializationOptions and `workspace/didChangeConfiguration`;
- each request waits out a debounce; a newer request for the same document makes an older one return
  empty, `$/cancelRequest` stops its generation; `rustle/partialCompletion` notifications carry the
  suggestion as it grows; `rustle/didAccept` and `rustle/didReject` are stored in local SQLite.
A request handler never raises: a bad position or a failing engine gives an empty answer and a log line.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from model.io import DEFAULT_MODEL

from .feedback import FeedbackStore

log = logging.getLogger("rustle.lsp")
PARTIAL = "rustle/partialCompletion"
STATUS = "rustle/status"  # {state: begin | report | ready | failed, message, model}
ACCEPT, REJECT = "rustle/didAccept", "rustle/didReject"
ACCEPTED_COMMAND = "rustle.accepted"  # clients with native ghost text run it after Tab (workspace/executeCommand)


@dataclass(frozen=True)
class Settings:
    model: str = str(DEFAULT_MODEL)
    max_tokens: int = 48
    debounce_ms: int = 60
    multiline: bool = True
    context: str = "repo"
    max_ms: float = 4000.0

    def updated(self, values: object) -> "Settings":
        """These settings with the known keys of a client's dict applied; wrong types are ignored, logged."""
        if not isinstance(values, dict):
            return self
        values = values.get("rustle", values)
        if not isinstance(values, dict):
            return self
        changes = {}
        for f in fields(self):
            camel = "".join(w.capitalize() if i else w for i, w in enumerate(f.name.split("_")))
            key = f.name if f.name in values else camel  # max_tokens or maxTokens
            if key in values:
                value, kind = values[key], type(getattr(self, f.name))
                if isinstance(value, kind) or (kind is float and isinstance(value, int)):
                    changes[f.name] = kind(value)
                else:
                    log.warning("setting %s: expected %s, got %r", key, kind.__name__, value)
        return replace(self, **changes)


def _default_feedback_db() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rustle" / "feedback.sqlite"


class RustleServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("rustle", "0.1.0")
        self.settings = Settings()
        self.root: Path | None = None
        self.engine = None
        self.ready: asyncio.Future | None = None
        self.latest: dict[str, int] = {}
        self.feedback = FeedbackStore(_default_feedback_db())

    # ----- engine --------------------------------------------------------------------------------------------
    def _engine_config(self):
        from assistant.engine.engine import EngineConfig, with_context

        config = EngineConfig(max_new_tokens=self.settings.max_tokens, max_ms=self.settings.max_ms)
        return with_context(config, self.settings.context if self.settings.context in
                            ("none", "local", "index", "repo") else "repo")

    def _load_engine(self) -> None:
        from assistant.engine.engine import Engine

        self.engine = Engine(Path(self.settings.model), self._engine_config())

    async def prepare(self) -> None:
        """Load the model and index the workspace off the event loop, reporting progress."""
        loop = asyncio.get_running_loop()
        token = "rustle-indexing"
        try:
            await self.work_done_progress.create_async(token)
        except Exception:  # the client does not take server-initiated progress
            token = None

        def status(stage: str, message: str) -> None:
            """$/progress for any client; `rustle/status` for our plugins' status bar, since a generic client
            such as vscode-languageclient takes over the progress token for its own notification."""
            model = Path(self.settings.model).name
            self.protocol.notify(STATUS, {"state": stage, "message": message, "model": model})
            if token is None:
                return
            if stage == "begin":
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="Rustle", message=message))
            elif stage == "report":
                self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))
            else:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

        status("begin", "loading model")
        try:
            await loop.run_in_executor(None, self._load_engine)
            if self.root is not None:
                done = [0]

                def on_file() -> None:
                    done[0] += 1
                    if done[0] % 50 == 0:
                        loop.call_soon_threadsafe(status, "report", f"indexed {done[0]} files")

                from assistant.index.indexer import index_workspace

                summary = await loop.run_in_executor(None, lambda: index_workspace(
                    self.root, self.engine.db_for(self.root), on_file=on_file, on_message=log.warning))
                self.engine._indexed.add(self.root.resolve())
                message = f"{summary.files} files indexed ({summary.parsed} parsed, {summary.definitions} definitions)"
            else:
                message = "no workspace folder"
            message = f"model {Path(self.settings.model).name} · {message}"
            self.ready.set_result(True)
            status("ready", message)
        except Exception as err:  # the server stays up; completions answer empty and say why in the log
            log.exception("could not start the engine")
            self.ready.set_result(False)
            status("failed", f"failed: {err}")

    def file_changed(self, uri: str) -> None:
        if self.engine is None or self.root is None:
            return
        path = Path(to_fs_path(uri) or "")
        try:
            relative = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return
        if relative.endswith(".rs"):
            threading.Thread(target=self.engine.file_saved, args=(self.root, relative), daemon=True).start()

    # ----- completion ----------------------------------------------------------------------------------------
    async def suggest(self, uri: str, position: types.Position) -> str:
        from assistant.engine.engine import Request

        seq = self.latest[uri] = self.latest.get(uri, 0) + 1
        await asyncio.sleep(self.settings.debounce_ms / 1000)
        if self.latest[uri] != seq or not await self.ready:
            return ""
        document = self.workspace.get_text_document(uri)
        text = document.source
        if position.line > len(document.lines) or position.line < 0 or position.character < 0:
            log.warning("position %s:%s is past the end of %s", position.line, position.character, uri)
            return ""
        offset = min(max(0, document.offset_at_position(position)), len(text))
        path = Path(to_fs_path(uri) or "untitled.rs")
        root = self.root or path.parent
        try:
            relative = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            root, relative = path.parent, path.name
        cancelled = threading.Event()
        final = ""
        try:
            async for partial in self.engine.complete(Request(root, relative, text, offset), cancelled):
                if self.latest[uri] != seq:  # superseded while generating
                    cancelled.set()
                    return ""
                final = partial
                self.protocol.notify(PARTIAL, {"uri": uri, "position": {"line": position.line,
                                                                       "character": position.character},
                                               "text": partial})
        except asyncio.CancelledError:
            cancelled.set()
            raise
        except Exception:
            log.exception("completion failed at %s:%s", uri, position.line)
            return ""
        finally:
            _trim_heap()
        return final if self.settings.multiline else final.split("\n", 1)[0]


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


LIBC = _libc()
if LIBC is not None:
    LIBC.mallopt(-8, 2)   # M_ARENA_MAX: engine threads share two heaps instead of one each


def _trim_heap() -> None:
    """Give freed pages back after a request: glibc otherwise keeps every tensor's freed memory around
    (RSS 1.1 GB and growing after 400 requests on the bundled workspace; flat at 0.55 GB with this:
    `rustle bench serve-memory`)."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


server = RustleServer()


@server.feature(types.INITIALIZE)
def initialize(ls: RustleServer, params: types.InitializeParams) -> None:
    folders = params.workspace_folders or []
    uri = folders[0].uri if folders else params.root_uri
    if uri:
        ls.root = Path(to_fs_path(uri) or ".")
    ls.settings = ls.settings.updated(params.initialization_options)
    ls.ready = asyncio.get_running_loop().create_future()


@server.feature(types.INITIALIZED)
async def initialized(ls: RustleServer, params: types.InitializedParams) -> None:
    await ls.prepare()


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: RustleServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.file_changed(params.text_document.uri)


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: RustleServer, params: types.DidChangeWatchedFilesParams) -> None:
    for change in params.changes:
        ls.file_changed(change.uri)


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: RustleServer, params: types.DidChangeConfigurationParams) -> None:
    before = ls.settings
    ls.settings = ls.settings.updated(params.settings)
    if ls.engine is not None and ls.settings.model != before.model:
        threading.Thread(target=ls._load_engine, daemon=True).start()
    elif ls.engine is not None:
        ls.engine.config = ls._engine_config()


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: RustleServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    text = await ls.suggest(params.text_document.uri, params.position)
    if not text:
        return types.InlineCompletionList(items=[])
    here = types.Range(params.position, params.position)
    where = {"line": params.position.line, "character": params.position.character}
    accepted = types.Command(title="Rustle: suggestion accepted", command=ACCEPTED_COMMAND,
                             arguments=[{"uri": params.text_document.uri, "text": text, "position": where}])
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=here,
                                                                        command=accepted)])


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", ":", "(", " "]))
async def completion(ls: RustleServer, params: types.CompletionParams) -> types.CompletionList:
    text = await ls.suggest(params.text_document.uri, params.position)
    if not text:
        return types.CompletionList(is_incomplete=True, items=[])
    here = types.Range(params.position, params.position)
    item = types.CompletionItem(label=text.split("\n", 1)[0][:60] or text[:60], kind=types.CompletionItemKind.Text,
                                detail="rustle", text_edit=types.TextEdit(here, text), filter_text="",
                                sort_text="0")
    return types.CompletionList(is_incomplete=True, items=[item])


def _plain(value: object) -> object:
    """Custom notifications' params as plain dicts and lists, whatever object pygls built from the JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_asdict"):
        return [_plain(v) for v in value]
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if hasattr(value, "__dict__"):
        return _plain(vars(value))
    return value


def _feedback(ls: RustleServer, verdict: str, params: object) -> None:
    value = _plain(params)
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        log.warning("%s without a text: ignored", verdict)
        return
    position = value.get("position") if isinstance(value.get("position"), dict) else {}
    ls.feedback.record(verdict, str(value.get("uri", "")), position.get("line"), position.get("character"),
                       value["text"], value.get("acceptedText"))


@server.feature(ACCEPT)
def did_accept(ls: RustleServer, params: object) -> None:
    _feedback(ls, "accept", params)


@server.command(ACCEPTED_COMMAND)
def accepted(ls: RustleServer, *args: object) -> None:
    """The inline item's command: VS Code (and Neovim 0.12) run it when Tab inserts the whole suggestion."""
    _feedback(ls, "accept", args[0] if args else None)


@server.feature(REJECT)
def did_reject(ls: RustleServer, params: object) -> None:
    _feedback(ls, "reject", params)


def serve(tcp: str | None = None) -> None:
    """stdio by default; `--tcp 127.0.0.1:PORT` for debugging (loopback only)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if tcp is None:
        server.start_io()
        return
    host, _, port = tcp.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"--tcp takes a loopback address (127.0.0.1:PORT), not {tcp}: the server stays local")
    server.start_tcp(host, int(port))
