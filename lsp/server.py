"""`rustle serve`: a pygls language server that streams completions from the engine into editors.

Handlers only, thin over one `RustleServer` state (llm-ls's shape):
- `textDocument/inlineCompletion` (ghost text) and `textDocument/completion` (one item with a text edit);
- the workspace is indexed in the background on `initialized`, with `$/progress` and `rustle/status`;
  saves and watched-file events are changes applied to the engine's workspace; after indexing and after
  each save the repository part's model state is prefilled in a worker, so no request waits for it;
- each request waits out a debounce; a newer request for the same document makes an older one return
  empty, `$/cancelRequest` stops its generation; `rustle/partialCompletion` carries the suggestion as it
  grows; `rustle/didAccept` and `rustle/didReject` are stored in local SQLite (lsp/feedback.py).
Messages of our own are defined in lsp/protocol.py, settings in lsp/settings.py. A request handler never
raises: a bad position or a failing engine gives an empty answer and a log line.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from assistant.engine.engine import Change, Engine, EngineConfig, Request, with_context

from . import protocol
from .feedback import FeedbackStore, default_feedback_db
from .jsonrpc import AnsweringProtocol, Reader, one_line, read_messages
from .memory import limit_arenas, trim_heap
from .settings import Settings

log = logging.getLogger("rustle.lsp")


class RustleServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("rustle", "0.1.0", protocol_cls=AnsweringProtocol)
        self.settings = Settings()
        self.root: Path | None = None
        self.engine: Engine | None = None
        self.ready: asyncio.Future | None = None
        self.latest: dict[str, int] = {}
        self.feedback = FeedbackStore(default_feedback_db())  # opened on the first verdict, not here
        self.switching: asyncio.Task | None = None            # a model being loaded after a settings change

    def _start_io_async(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """pygls's stdio server with our message reader (lsp/jsonrpc.py says what pygls's own lacked)."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        reader = Reader(stdin or sys.stdin.buffer, self.thread_pool)
        try:
            asyncio.run(read_messages(self._stop_event, reader, self.protocol, self.report_server_error))
        except BrokenPipeError:
            log.warning("the client closed the connection")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    # ----- engine --------------------------------------------------------------------------------------------
    def _engine_config(self) -> EngineConfig:
        config = EngineConfig(max_new_tokens=self.settings.max_tokens, max_ms=self.settings.max_ms,
                              device=self.settings.device, background=True, persist=True)
        return with_context(config, self.settings.context_mode)

    def _load_engine(self) -> None:
        self.engine = Engine(Path(self.settings.model), self._engine_config())

    def _status(self, token: str | None, state: str, message: str) -> None:
        """$/progress for any client; `rustle/status` for our plugins' status bar, since a generic client
        such as vscode-languageclient takes over the progress token for its own notification."""
        status = protocol.Status(state, message, Path(self.settings.model).name)
        self.protocol.notify(protocol.STATUS, status.to_json())
        if token is None:
            return
        if state == "begin":
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="Rustle", message=message))
        elif state == "report":
            self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))
        else:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    async def prepare(self) -> None:
        """Load the model and index the workspace off the event loop, reporting progress."""
        loop = asyncio.get_running_loop()
        token: str | None = "rustle-indexing"
        try:
            await self.work_done_progress.create_async(token)
        except Exception:  # the client does not take server-initiated progress
            token = None
        self._status(token, "begin", "loading model")
        try:
            await loop.run_in_executor(None, self._load_engine)
            if self.root is not None:
                done = [0]

                def on_file() -> None:
                    done[0] += 1
                    if done[0] % 50 == 0:
                        loop.call_soon_threadsafe(self._status, token, "report", f"indexed {done[0]} files")

                workspace = self.engine.workspace(self.root)
                summary = await loop.run_in_executor(None, lambda: workspace.index(on_file, log.warning))
                message = f"{summary.files} files indexed ({summary.parsed} parsed, {summary.definitions} definitions)"
                self._report_prefill(token, message)
                self.engine.prefill_repository(self.root, self._open_document())   # in a worker
            else:
                message = "no workspace folder"
            self.ready.set_result(True)
            self._status(token, "ready", f"model {Path(self.settings.model).name} · {message}")
        except Exception as err:  # the server stays up; completions answer empty and say why in the log
            log.exception("could not start the engine")
            self.ready.set_result(False)
            self._status(token, "failed", f"failed: {err}")

    async def switch_model(self, before: Settings) -> None:
        """Load the model the settings name now, off the event loop; one that cannot be loaded leaves the one
        serving in place, and the client is told why (window/showMessage and rustle/status)."""
        name, kept = Path(self.settings.model).name, Path(before.model).name
        self._status(None, "begin", f"loading model {name}")
        try:
            await asyncio.to_thread(self._load_engine)
        except Exception as err:  # a bad folder, too little memory: the old engine keeps serving
            self.settings = replace(self.settings, model=before.model)
            log.warning("model %s not loaded, %s kept: %s", name, kept, err)
            self.window_show_message(types.ShowMessageParams(
                types.MessageType.Error, f"Rustle: model {name} not loaded ({err}); still using {kept}"))
            self._status(None, "ready", f"model {name} not loaded; still using {kept}")
            return
        self._status(None, "ready", f"model {name}")

    def _report_prefill(self, token: str | None, indexed: str) -> None:
        """The repository part's prefill in the status bar, in tenths; suggestions are served meanwhile."""
        loop, shown = asyncio.get_running_loop(), [-1]

        def report(root: Path, done: int, total: int) -> None:
            tenth = 10 * done // max(total, 1)
            if tenth != shown[0]:
                shown[0] = tenth
                state = "repository in context" if done >= total else f"repository {10 * tenth}% in context"
                loop.call_soon_threadsafe(self._status, None, "ready",
                                          f"model {Path(self.settings.model).name} · {indexed} · {state}")

        self.engine.prefill.on_progress = report

    def _open_document(self) -> str:
        """A Rust document open in the editor, relative to the root ("" if none): its repository part (every
        other file, context.py) and its lines prefilled now spare its first request the re-run."""
        for uri in self.workspace.text_documents:
            path = Path(to_fs_path(uri) or "")
            if path.suffix == ".rs" and self.root is not None and path.resolve().is_relative_to(self.root.resolve()):
                return path.resolve().relative_to(self.root.resolve()).as_posix()
        return ""

    def place(self, uri: str) -> tuple[Path | None, str]:
        """Where a document sits: (the workspace root, its path there), or (None, its name) when it is outside
        the workspace (no root, not a file: URI, or outside the root once symlinks and `..` are resolved):
        then it is completed from its buffer alone, and nothing around it is indexed or read."""
        name = Path(urlparse(uri).path).name or "untitled.rs"
        if self.root is None or not uri.startswith("file:"):
            return None, name
        try:
            return self.root, Path(to_fs_path(uri) or "").resolve().relative_to(self.root.resolve()).as_posix()
        except (ValueError, OSError, RuntimeError):
            return None, name

    def file_changed(self, uri: str, kind: str = "saved") -> None:
        if self.engine is None or self.root is None:
            return
        path = Path(to_fs_path(uri) or "")
        try:
            relative = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return
        if relative.endswith(".rs"):
            change = Change(relative, kind)
            threading.Thread(target=self._apply, args=(self.engine, self.root, change), daemon=True).start()

    @staticmethod
    def _apply(engine: Engine, root: Path, change: Change) -> None:
        """Re-index the changed file, then refresh the repository part's state (both off the event loop)."""
        try:
            engine.workspace(root).apply_change(change)
            engine.prefill_repository(root, change.path)   # the saved file is most likely the one edited
        except Exception:  # a change that cannot be applied is logged; the server goes on
            log.exception("could not apply %s", change)

    # ----- completion ----------------------------------------------------------------------------------------
    async def suggest(self, uri: str, position: types.Position) -> str:
        seq = self.latest[uri] = self.latest.get(uri, 0) + 1
        await asyncio.sleep(self.settings.debounce_ms / 1000)
        if self.latest[uri] != seq or not await self.ready:
            return ""
        document = self.workspace.text_documents.get(unquote(uri))   # pygls keys them unquoted
        if document is None:    # pygls would read an unopened document from disk: outside a buffer, nothing is read
            log.warning("%s is not open: the client sends a document with didOpen before asking about it", uri)
            return ""
        text = document.source
        if position.line > len(document.lines) or position.line < 0 or position.character < 0:
            log.warning("position %s:%s is past the end of %s", position.line, position.character, uri)
            return ""
        offset = min(max(0, document.offset_at_position(position)), len(text))
        root, relative = self.place(uri)
        cancelled = threading.Event()
        final = ""
        where = protocol.Position(position.line, position.character)
        try:
            async for partial in self.engine.complete(Request(root, relative, text, offset), cancelled):
                if self.latest[uri] != seq:  # superseded while generating
                    cancelled.set()
                    return ""
                final = partial
                self.protocol.notify(protocol.PARTIAL, protocol.PartialCompletion(uri, where, partial).to_json())
        except asyncio.CancelledError:
            cancelled.set()
            raise
        except Exception:
            log.exception("completion failed at %s:%s", uri, position.line)
            return ""
        finally:
            trim_heap()
        return final if self.settings.multiline else final.split("\n", 1)[0]


server = RustleServer()


@server.feature(types.INITIALIZE)
def initialize(ls: RustleServer, params: types.InitializeParams) -> None:
    if ls.ready is not None:   # a second initialize: the session goes on as it was (it once silenced the server)
        log.warning("a second initialize ignored")
        return
    folders = params.workspace_folders or []
    uri = folders[0].uri if folders else params.root_uri
    root = Path(to_fs_path(uri)).resolve() if uri and to_fs_path(uri) else None
    if root is not None and root in (Path(root.anchor), Path.home().resolve()):
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Warning, (
            f"Rustle does not index {root} (the whole disk or your home folder): open a project folder. "
            "Until then, suggestions use the open file alone.")))
        root = None
    ls.root = root
    ls.settings = ls.settings.updated(params.initialization_options)
    ls.ready = asyncio.get_running_loop().create_future()


@server.feature(types.INITIALIZED)
async def initialized(ls: RustleServer, params: types.InitializedParams) -> None:
    await ls.prepare()


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: RustleServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.file_changed(params.text_document.uri)


WATCHED = {types.FileChangeType.Created: "created", types.FileChangeType.Changed: "saved",
           types.FileChangeType.Deleted: "deleted"}


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: RustleServer, params: types.DidChangeWatchedFilesParams) -> None:
    for change in params.changes:
        ls.file_changed(change.uri, WATCHED.get(change.type, "saved"))


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: RustleServer, params: types.DidChangeConfigurationParams) -> None:
    before = ls.settings
    ls.settings = ls.settings.updated(params.settings)
    if ls.engine is not None and ls.settings.model != before.model:
        # held on the server: the loop keeps only a weak reference to a task
        ls.switching = asyncio.get_running_loop().create_task(ls.switch_model(before))
    elif ls.engine is not None:
        ls.engine.config = ls._engine_config()


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: RustleServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    text = await ls.suggest(params.text_document.uri, params.position)
    if not text:
        return types.InlineCompletionList(items=[])
    here = types.Range(params.position, params.position)
    feedback = {"uri": params.text_document.uri, "text": text,
                "position": {"line": params.position.line, "character": params.position.character}}
    accepted = types.Command(title="Rustle: suggestion accepted", command=protocol.ACCEPTED_COMMAND,
                             arguments=[feedback])
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


async def _feedback(ls: RustleServer, verdict: str, params: object) -> None:
    feedback = protocol.Feedback.from_json(_plain(params))
    if feedback is None:
        log.warning("%s without a text: ignored", verdict)
        return
    # on a worker thread: a store blocked by another writer never stalls the event loop; a failure is logged there
    await asyncio.to_thread(ls.feedback.record, verdict, feedback)


@server.feature(protocol.ACCEPT)
async def did_accept(ls: RustleServer, params: object) -> None:
    await _feedback(ls, "accept", params)


@server.command(protocol.ACCEPTED_COMMAND)
async def accepted(ls: RustleServer, *args: object) -> None:
    """The inline item's command: VS Code (and Neovim 0.12) run it when Tab inserts the whole suggestion."""
    await _feedback(ls, "accept", args[0] if args else None)


@server.feature(protocol.REJECT)
async def did_reject(ls: RustleServer, params: object) -> None:
    await _feedback(ls, "reject", params)


def serve(tcp: str | None = None, device: str = "cpu", model: Path | None = None) -> None:
    """stdio by default; `--tcp 127.0.0.1:PORT` for debugging (loopback only). `device` and `model` (a folder;
    None: the shipped one): where and what runs unless the client's settings say otherwise."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    one_line()
    if tcp is not None:
        host, _, port = tcp.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"--tcp takes a loopback address (127.0.0.1:PORT), not {tcp}: the server stays local")
    limit_arenas()
    server.settings = replace(server.settings, device=device,
                              model=server.settings.model if model is None else str(model.absolute()))
    if tcp is None:
        server.start_io()
    else:
        server.start_tcp(host, int(port))
