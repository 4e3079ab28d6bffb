"""The completion engine's façade: `complete(request)` → the suggestion at a cursor, as a stream of growing text.

One model and one state cache per engine; requests run one at a time on the model thread (the model is
the bottleneck on a laptop CPU). A request: its workspace (workspace.py) → the prompt (prompt.py) →
decoding (decode.py) → the model. A request that only extends the prefix of the generation in flight by
the characters it suggested is served from that generation (stream.py) instead of starting a new one.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from kernels.attention import available as cpu_kernel_available
from model import DEFAULT_MODEL
from model.io import load_model
from model.precision import fast_dtype, rows_dtype
from model.serving import for_serving
from tokenizer import tokenizer_of

from ..index.workspace import cache_dir, default_db
from .background import RepositoryPart, RepositoryPrefill
from .copy import CopyConfig, CopyModel
from .decode import suggest
from .model_thread import fit_threads, on_model_thread
from .guide import Guide, GuideConfig, Spellings
from .healing import Healer
from .persist import StateFiles, model_key
from .prompt import CONTEXTS, Prompt, PromptConfig, alone, assemble, with_repository
from .request import Completion, Request
from .state import StateCache
from .stream import Generation
from .tokens import Vocab
from .workspace import Change, Workspace

__all__ = ["CONTEXTS", "DEFAULT_MODEL", "cache_dir", "Change", "Completion", "Engine", "EngineConfig", "Request",
           "Workspace", "with_context"]


@dataclass(frozen=True)
class EngineConfig:
    prompt: PromptConfig = field(default_factory=PromptConfig)
    copy: CopyConfig = field(default_factory=CopyConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    max_new_tokens: int = 48            # one line
    max_new_tokens_block: int = 160     # a block body
    max_ms: float = 4000.0              # decoding time, after the prompt is in the cache
    snippet_tokens: int = 1024          # "index" context
    repo_tokens: int = 131072           # "repo" context
    copy_draft: bool = True             # speculative decoding with copy-model drafts
    copy_mix: bool = True               # copy distribution interpolated into the model's
    dtype: str = "auto"                 # "bf16" | "fp32" | "auto": bf16 on a GPU, fp32 on a CPU (model/precision.py)
    device: str = "cpu"                 # "cuda": the model, its caches and the Triton kernels on the GPU
    state_mb: int = 768                 # model states kept for reuse (state.py), the live cache included
    background: bool = False            # prefill the repository part in a worker, never on a request (the server)
    persist: bool = False               # …and keep its state on disk for the next start (persist.py)
    threads: int | None = None          # None: the cores other processes leave idle, checked before each request

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device '{self.device}': use cpu or cuda")


@dataclass(frozen=True)
class ShortPrefix:
    """A request's prefix while its document's lines are still being prefilled (the SPM budgets of before)."""
    prefix_tokens: int = 1536
    window_lines: int = 32
    anchor_lines: int = 32


SHORT = ShortPrefix()


def with_context(config: EngineConfig, context: str, copy: bool = True) -> EngineConfig:
    """`config` with another context mode and the copy model on or off (the `eval lines` ablations)."""
    return replace(config, prompt=replace(config.prompt, context=context), copy_draft=copy, copy_mix=copy)


class Engine:
    def __init__(self, model_dir: Path = DEFAULT_MODEL, config: EngineConfig = EngineConfig(),
                 db_for: Callable[[Path], Path] = default_db) -> None:
        self.config = config
        dtype, rows = fast_dtype(config.dtype, config.device), rows_dtype(config.dtype, config.device)

        def load() -> tuple[torch.nn.Module, StateCache]:    # every torch op of an engine runs on the model thread
            fit_threads(config.threads)
            model = for_serving(load_model(model_dir, dtype).to(config.device), config.device, rows)
            return model, StateCache(model, config.state_mb << 20)
        self.model, self.state = on_model_thread(load)
        if config.device == "cpu":
            cpu_kernel_available()      # built (once per machine) now rather than on the first request
        self.vocab = Vocab(tokenizer_of(model_dir))
        self.healer = Healer(self.vocab.token_bytes)
        self.spellings = Spellings(self.vocab.token_bytes)
        self.db_for = db_for
        self.lock = threading.Lock()
        kind = str(dtype) if rows == dtype else f"{dtype}, many rows in {rows}"     # states differ by both
        self.prefill = RepositoryPrefill(self.state, self.lock,
                                         StateFiles(model_key(model_dir, kind)) if config.persist else None)
        self.workspaces: dict[Path, Workspace] = {}
        self.inflight: Generation | None = None

    def workspace(self, root: Path) -> Workspace:
        """The one Workspace of `root` (its index, tokens and copy table), made on first use."""
        known = self.workspaces.get(root)    # as requests name it: resolving a path stats each of its parts
        if known is None:
            resolved = root.resolve()
            known = self.workspaces.get(resolved) or Workspace(resolved, self.vocab, self.db_for(resolved))
            self.workspaces[root] = self.workspaces[resolved] = known
        return known

    def prompt(self, request: Request) -> tuple[Prompt, list[str]]:
        """The prompt a request decodes after, and the repository files in it. In the background mode its
        repository part (the files, then the buffer outside the cursor's window and the code like its lines; local
        context: the buffer outside alone) is one
        the state tree holds (or none), and the current one is prefilled meanwhile; the index context's snippets are
        chosen for this cursor (~1K tokens), so a request feeds its own."""
        config = self.config
        if request.root is None:   # outside every workspace: the buffer alone
            return alone(self.vocab, request, config.prompt), []
        prompt, files = assemble(self.workspace(request.root), request, config.prompt, config.repo_tokens,
                                 config.snippet_tokens)
        if config.background and config.prompt.context in ("repo", "local") and prompt.local_start > 0:
            root, part = self.workspace(request.root).root, RepositoryPart.of(prompt)
            served = self._usable(root, prompt)
            if config.prompt.layout != "spm" and self._unfed(served) > SHORT.prefix_tokens:
                # the document's lines are not in the state tree yet: prefill them for the next requests, and
                # answer this one with a short prefix instead of feeding the file from its first line
                document = RepositoryPart.document(prompt)
                prompt, files = assemble(self.workspace(request.root), request,
                                         replace(config.prompt, **asdict(SHORT)), config.repo_tokens,
                                         config.snippet_tokens)
                served = self._usable(root, prompt)
                self.prefill.want(root, part, document)   # after `_usable`, which may want the part alone
            prompt = served
        return prompt, files

    def _usable(self, root: Path, prompt: Prompt) -> Prompt:
        """`prompt` with the repository part the state tree holds: its own; or the last one ready, whole (one prefilled
        for another cursor of this document ends with the buffer outside that cursor's window, which stands in for
        this one's; one prefilled for another document holds this one's saved copy among its files); or none."""
        part = RepositoryPart.of(prompt)
        usable = self.prefill.usable(root, part)
        if usable is part:
            return prompt
        if usable is None or (usable.ids and not self.state.holds(usable.ids)):   # no snapshot where it ends
            return with_repository(prompt, [], [])
        return with_repository(prompt, usable.ids, usable.boundaries, usable.files_end)

    def _unfed(self, prompt: Prompt) -> int:
        """How many of `prompt`'s tokens a prefill would run (the rest is held by a snapshot)."""
        return len(prompt.ids) - self.state.deepest(prompt.ids, prompt.boundaries)

    def prefill_repository(self, root: Path, path: str = "", saved: str | None = None) -> None:
        """Start prefilling `root`'s repository part, then (layouts psm and prefix) `path`'s lines as saved (the
        server calls this after indexing, on opening a document and on saves; `saved`: that text, else read from
        disk). Only the repo context has one."""
        if self.config.prompt.context != "repo":
            return
        text = saved
        if text is None:
            try:
                text = (root / path).read_text(encoding="utf-8", errors="replace") if path else ""
            except OSError:
                text = ""
        # a cursor's own part (the buffer outside its window, the windows like its lines) comes with the cursor
        files_only = replace(self.config.prompt, head_tokens=0, tail_tokens=0, similar_tokens=0)
        with self.lock:
            prompt, _ = assemble(self.workspace(root), Request(root, path, text, len(text)), files_only,
                                 self.config.repo_tokens, self.config.snippet_tokens)
        if prompt.local_start > 0:
            document = RepositoryPart.document(prompt) if path and self.config.prompt.layout != "spm" else None
            self.prefill.want(self.workspace(root).root, RepositoryPart.of(prompt), document)

    def prepare(self, root: Path, path: str, stopped: threading.Event | None = None) -> bool:
        """Prefill `root`'s repository part and `path`'s saved lines and wait until the state tree holds them (a
        conversation's code request wants the whole repository, not the local context a server answers with
        meanwhile); False when `stopped` is set first. A foreground engine has nothing to wait for."""
        if not self.config.background:
            return True
        self.prefill_repository(root, path)
        while not self.prefill.wait(timeout=0.1):
            if stopped is not None and stopped.is_set():
                return False
        return True

    def complete_sync(self, request: Request, on_text: Callable[[str], None] = lambda t: None,
                      cancelled: threading.Event | None = None) -> Completion:
        error = request.position_error()
        if error:
            raise ValueError(error)
        started = time.perf_counter()
        with self.prefill.request(), self.lock:
            return on_model_thread(lambda: self._complete(request, on_text, cancelled, started))

    def _complete(self, request: Request, on_text: Callable[[str], None], cancelled: threading.Event | None,
                  started: float) -> Completion:
        config = self.config
        prompt, paths = self.prompt(request)
        copy = None
        if (config.copy_draft or config.copy_mix) and request.root is None:
            copy = CopyModel(config.copy)                     # the buffer's own tokens only (below)
        elif config.copy_draft or config.copy_mix:
            copy = self.workspace(request.root).copy_model(paths, config.copy)
        mark = len(copy) if copy is not None else 0
        if copy is not None:
            copy.extend(prompt.copy_ids)
        guide = None
        if config.guide.enabled and request.root is not None:
            names = self.workspace(request.root).names
            guide = Guide(config.guide, self.spellings, names, request.text[:request.offset])
        limit = config.max_new_tokens_block if prompt.shape.multiline else config.max_new_tokens
        try:
            out = suggest(self.state, self.vocab, self.healer, prompt, limit, config.max_ms / 1000, copy,
                          config.copy_draft, config.copy_mix, request.text[request.offset:],
                          cancelled or threading.Event(), on_text, guide)
        finally:
            if copy is not None:
                copy.truncate(mark)
        return Completion(out.text, prompt.shape.multiline, out.stopped, out.generated_tokens, out.forward_steps,
                          len(prompt.ids), out.reused_tokens, 1000 * (time.perf_counter() - started))

    async def complete(self, request: Request, cancelled: threading.Event | None = None) -> AsyncIterator[str]:
        """The suggestion as it grows; the last item is the final, tidied text. Setting `cancelled` stops it.

        If the generation in flight was started for this document with a prefix that this request's prefix
        extends by text the generation has produced, this request is served from it."""
        cancelled = cancelled or threading.Event()
        inflight = self.inflight
        if inflight is not None:
            typed = inflight.continues(request)
            if typed is not None:
                async for text in inflight.stream(typed, cancelled):
                    yield text
                return
            inflight.cancelled.set()
        generation = Generation(self.complete_sync, request, asyncio.get_running_loop())
        self.inflight = generation
        try:
            async for text in generation.stream("", cancelled):
                yield text
        finally:
            if cancelled.is_set() and generation.listeners == 0:
                generation.cancelled.set()
