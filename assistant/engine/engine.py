"""The completion engine: `complete(request)` → the suggestion at a cursor, as a stream of growing text.

One model and one state cache per engine; requests run one at a time on a worker thread (the model is
the bottleneck on a laptop CPU). A request that only extends the prefix of the generation in flight by
the characters it suggested is served from that generation instead of starting a new one.
"""
from __future__ import annotations

import asyncio
import codecs
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from model.io import DEFAULT_MODEL, load_model
from tokenizer import load_tokenizer

from ..index.indexer import index_file, index_workspace
from ..index.store import open_or_rebuild
from ..index.workspace import default_db
from .context import repository_files, snippets
from .copy import CopyConfig, CopyModel
from .healing import Healer, consume
from .prompt import Prompt, PromptConfig, build_prompt
from .shape import cut, shape_at, tidy
from .state import StateCache
from .tokens import Vocab


@dataclass(frozen=True)
class EngineConfig:
    prompt: PromptConfig = field(default_factory=PromptConfig)
    copy: CopyConfig = field(default_factory=CopyConfig)
    max_new_tokens: int = 48            # one line
    max_new_tokens_block: int = 160     # a block body
    max_ms: float = 4000.0              # decoding time, after the prompt is in the cache
    snippet_tokens: int = 1024          # "index" context
    repo_tokens: int = 131072           # "repo" context
    copy_draft: bool = True             # speculative decoding with copy-model drafts
    copy_mix: bool = True               # copy distribution interpolated into the model's
    threads: int | None = None


@dataclass(frozen=True)
class Request:
    root: Path
    path: str                            # relative to root, posix
    text: str                            # the editor buffer
    offset: int                          # cursor, in characters
    overrides: dict[str, str] = field(default_factory=dict)  # unsaved buffers: path -> text, instead of disk


@dataclass
class Completion:
    text: str
    multiline: bool
    stopped: str                         # "rule" | "eos" | "tokens" | "deadline" | "cancelled"
    generated_tokens: int
    forward_steps: int
    prompt_tokens: int
    reused_tokens: int
    ms: float


def _position_error(text: str, offset: int) -> str | None:
    if not 0 <= offset <= len(text):
        return f"cursor offset {offset} is outside the buffer (0..{len(text)})"
    return None


class Engine:
    def __init__(self, model_dir: Path = DEFAULT_MODEL, config: EngineConfig = EngineConfig(),
                 db_for: Callable[[Path], Path] = default_db) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        self.model = load_model(model_dir).to(torch.bfloat16).eval()
        tok_dir = model_dir if (model_dir / "tokenizer.json").is_file() else None
        self.vocab = Vocab(load_tokenizer(tok_dir) if tok_dir else load_tokenizer())
        self.healer = Healer(self.vocab.token_bytes)
        self.state = StateCache(self.model)
        self.db_for = db_for
        self.lock = threading.Lock()
        self._indexed: set[Path] = set()
        self._file_tokens: dict[tuple[Path, str], tuple[object, list[int]]] = {}
        self._copy: CopyModel | None = None
        self._copy_key: tuple | None = None
        self.recent: list[str] = []
        self._inflight: _Generation | None = None

    # ----- workspace ------------------------------------------------------------------------------------------
    def _db(self, root: Path) -> sqlite3.Connection:
        root = root.resolve()
        if root not in self._indexed:
            index_workspace(root, self.db_for(root), on_message=lambda m: None)
            self._indexed.add(root)
        return open_or_rebuild(self.db_for(root), on_message=lambda m: None)

    def file_saved(self, root: Path, path: str) -> None:
        """A save or a watched-file event: re-index that file; the repository state follows on the next request."""
        index_file(root, self.db_for(root), path)
        self.recent = [p for p in self.recent if p != path][-15:] + [path]

    def _tokens_of(self, root: Path, path: str, overrides: dict[str, str]) -> list[int]:
        if path in overrides:
            key: object = ("override", hash(overrides[path]))
            read = lambda: overrides[path]  # noqa: E731
        else:
            try:
                stat = (root / path).stat()
            except OSError:
                return []
            key = (stat.st_mtime_ns, stat.st_size)
            read = lambda: (root / path).read_text(encoding="utf-8", errors="replace")  # noqa: E731
        cached = self._file_tokens.get((root, path))
        if cached is None or cached[0] != key:
            cached = (key, self.vocab.encode(read()))
            self._file_tokens[(root, path)] = cached
        return cached[1]

    def _copy_model(self, root: Path, paths: list[str]) -> CopyModel:
        """The n-gram table of `paths`, whose tokens `_prompt` has just brought up to date; rebuilt on change."""
        cached = [(p, self._file_tokens[(root, p)]) for p in paths if (root, p) in self._file_tokens]
        key = (root, tuple((p, version) for p, (version, _) in cached))
        if self._copy is None or self._copy_key != key:
            copy = CopyModel(self.config.copy)
            for p, (_, tokens) in cached:
                copy.extend(self.vocab.file_header(p) + tokens)
            self._copy, self._copy_key = copy, key
        return self._copy

    # ----- prompt ---------------------------------------------------------------------------------------------
    def _prompt(self, request: Request, db: sqlite3.Connection) -> tuple[Prompt, list[str]]:
        root, mode = request.root.resolve(), self.config.prompt.context
        paths = [p for (p,) in db.execute("SELECT path FROM files ORDER BY path")]
        shape = shape_at(request.text, request.offset)
        count = lambda p: len(self._tokens_of(root, p, request.overrides)) + 8  # noqa: E731
        files = repository_files(root, paths, request.path, self.config.repo_tokens, count, db)
        context: list[tuple[str, list[int]]] = []
        if mode == "repo":
            context = [(p, self._tokens_of(root, p, request.overrides)) for p in files]
        elif mode == "index":
            used = 0
            for snip in snippets(db, request.path, request.text[:request.offset], self.recent):
                tokens = self.vocab.encode(snip.text)
                if used + len(tokens) > self.config.snippet_tokens:
                    break
                context.append((snip.path, tokens))
                used += len(tokens)
        prompt = build_prompt(self.vocab, self.config.prompt, request.path, request.text, request.offset, shape,
                              context, root.name)
        return prompt, files

    # ----- generation -----------------------------------------------------------------------------------------
    def _choose(self, logits: torch.Tensor, history: list[int], pending: bytes, copy: CopyModel | None) -> int:
        if copy is not None:  # mix first, so the healing constraint holds for the copied tokens too
            logits = copy.mix(torch.softmax(logits.float(), -1), history).log()
        if pending:
            logits = self.healer.mask(logits, pending)
        return int(logits.argmax())

    def complete_sync(self, request: Request, on_text: Callable[[str], None] = lambda t: None,
                      cancelled: threading.Event | None = None) -> Completion:
        error = _position_error(request.text, request.offset)
        if error:
            raise ValueError(error)
        started = time.perf_counter()
        cancelled = cancelled or threading.Event()
        with self.lock:
            db = self._db(request.root)
            try:
                prompt, paths = self._prompt(request, db)
            finally:
                db.close()
            copy = None
            if self.config.copy_draft or self.config.copy_mix:
                copy = self._copy_model(request.root.resolve(), paths)
            mark = len(copy) if copy is not None else 0
            if copy is not None:
                copy.extend(prompt.ids[prompt.local_start:])
            try:
                return self._generate(prompt, copy, started, cancelled, on_text,
                                      request.text[request.offset:])
            finally:
                if copy is not None:
                    copy.truncate(mark)

    @torch.inference_mode()
    def _generate(self, prompt: Prompt, copy: CopyModel | None, started: float,
                  cancelled: threading.Event, on_text: Callable[[str], None], following: str) -> Completion:
        logits, stats = self.state.prefill(prompt.ids, prompt.boundaries)
        deadline = time.perf_counter() + self.config.max_ms / 1000  # for decoding: a cold prefill still answers
        shape = prompt.shape
        limit = self.config.max_new_tokens_block if shape.multiline else self.config.max_new_tokens
        mix = copy if self.config.copy_mix else None
        history = prompt.ids[-64:]
        pending, generated, steps = prompt.healed, 0, 1
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text, kept, stopped = "", "", "tokens"
        special = set(self.vocab.special.values())

        def accept(token: int) -> bool:
            """Add a token; True when generation must stop."""
            nonlocal pending, generated, text, kept, stopped, history
            if token in special:
                stopped = "eos"
                return True
            generated += 1
            history = history[-63:] + [token]
            piece = self.vocab.token_bytes[token]
            healing = len(pending)
            pending = consume(pending, piece)
            text += decoder.decode(piece[min(len(piece), healing):] if healing else piece)
            kept, stop = cut(text, shape)
            if stop:
                stopped = "rule"
            on_text(kept)
            return stop

        while generated < limit:
            if cancelled.is_set() or time.perf_counter() > deadline:
                stopped = "cancelled" if cancelled.is_set() else "deadline"
                break
            token = self._choose(logits, history, pending, mix)
            if accept(token):
                break
            draft = copy.draft(history) if copy is not None and self.config.copy_draft and not pending else []
            draft = draft[:max(0, limit - generated)]
            if not draft:
                logits = self.state.feed([token])[0]
                steps += 1
                continue
            mark = self.state.mark()
            out = self.state.feed([token] + draft)
            steps += 1
            accepted, stop = 0, False
            for i, proposal in enumerate(draft):
                if self._choose(out[i], history, b"", mix) != proposal:
                    break
                accepted += 1
                if accept(proposal):
                    stop = True
                    break
            if stop:
                break
            if accepted < len(draft):
                self.state.rewind(mark)
                self.state.feed([token] + draft[:accepted])
            else:
                self.state.cache.forget(mark)
            logits = out[accepted]
        final = tidy(kept, shape, following)
        return Completion(final, shape.multiline, stopped, generated, steps, len(prompt.ids), stats.reused,
                          1000 * (time.perf_counter() - started))

    # ----- streaming ------------------------------------------------------------------------------------------
    async def complete(self, request: Request, cancelled: threading.Event | None = None) -> AsyncIterator[str]:
        """The suggestion as it grows; the last item is the final, tidied text. Setting `cancelled` stops it.

        If the generation in flight was started for this document with a prefix that this request's prefix
        extends by text the generation has produced, this request is served from it."""
        cancelled = cancelled or threading.Event()
        inflight = self._inflight
        if inflight is not None:
            typed = inflight.continues(request)
            if typed is not None:
                async for text in inflight.stream(typed, cancelled):
                    yield text
                return
            inflight.cancelled.set()
        generation = _Generation(self, request, asyncio.get_running_loop())
        self._inflight = generation
        try:
            async for text in generation.stream("", cancelled):
                yield text
        finally:
            if cancelled.is_set() and generation.listeners == 0:
                generation.cancelled.set()


class _Generation:
    """One running completion on a worker thread, readable by several requests (the original and typed-ahead ones)."""

    def __init__(self, engine: Engine, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request, self.loop = request, loop
        self.text, self.final, self.error = "", None, None
        self.cancelled = threading.Event()
        self.changed = asyncio.Event()
        self.listeners = 0
        self.thread = threading.Thread(target=self._run, args=(engine,), daemon=True)
        self.thread.start()

    def _run(self, engine: Engine) -> None:
        try:
            result = engine.complete_sync(self.request, self._update, self.cancelled)
            self.loop.call_soon_threadsafe(self._finish, result.text, None)
        except Exception as err:  # reported to the awaiting request, never raised on the thread
            self.loop.call_soon_threadsafe(self._finish, None, err)

    def _update(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self._set, text)

    def _set(self, text: str) -> None:
        self.text = text
        self.changed.set()

    def _finish(self, final: str | None, error: Exception | None) -> None:
        self.final, self.error = (final if final is not None else self.text), error
        self.changed.set()

    def continues(self, request: Request) -> str | None:
        """The characters typed since this generation started, if `request` is this document typed along it."""
        old = self.request
        if request.path != old.path or request.root != old.root or self.cancelled.is_set():
            return None
        typed_len = request.offset - old.offset
        if typed_len < 0 or request.text[request.offset:] != old.text[old.offset:]:
            return None
        if request.text[:old.offset] != old.text[:old.offset]:
            return None
        typed = request.text[old.offset:request.offset]
        produced = self.final if self.final is not None else self.text
        return typed if produced.startswith(typed) and (self.final is None or len(typed) < len(produced)) else None

    async def stream(self, typed: str, cancelled: threading.Event) -> AsyncIterator[str]:
        self.listeners += 1
        try:
            while True:
                self.changed.clear()
                if self.error is not None:
                    raise self.error
                current = self.final if self.final is not None else self.text
                if current.startswith(typed) and len(current) > len(typed):
                    yield current[len(typed):]
                if self.final is not None or cancelled.is_set():
                    return
                await self.changed.wait()
        finally:
            self.listeners -= 1


def with_context(config: EngineConfig, context: str, copy: bool = True) -> EngineConfig:
    """`config` with another context mode and the copy model on or off (the `eval lines` ablations)."""
    return replace(config, prompt=replace(config.prompt, context=context), copy_draft=copy, copy_mix=copy)
