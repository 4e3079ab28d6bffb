"""The repository part of prompts, prefilled ahead of requests in a worker thread, so that no request waits
for it: a request whose repository part is not in the state tree yet is served with the last one that is
(stale by the files saved since; the live buffer carries the unsaved edits anyway), or with none. In the spm
layout the part ends with the buffer outside the cursor's window and the code like its lines (prompt.py, similar.py):
a new cursor is served with the last cursor's part until its own is in (of this document: the buffer as it was there;
of another: with this one's saved copy among the files); only the files' state goes to disk. After the part, the open
document's lines as saved (layouts psm and prefix), so that a new cursor resumes a few lines above.

The worker feeds one segment per hold of the engine lock (a file, or a piece of at most 2,048 tokens of a
long one), through `StateCache.prefill` with the request's own segmentation, so a request waits at most for
one segment and a warm run still equals a cold one. The feeding itself runs on the model thread, as requests do
(model_thread.py).
"""
from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .model_thread import on_model_thread
from .persist import StateFiles
from .prompt import Prompt
from .state import StateCache

T = TypeVar("T")
log = logging.getLogger("rustle.engine")
_LIVE: weakref.WeakSet[RepositoryPrefill] = weakref.WeakSet()   # stopped at exit (`close`)


@dataclass(frozen=True)
class RepositoryPart:
    ids: list[int]               # the prompt up to its local part: repository header and files
    boundaries: list[int]        # the file ends inside it (and pieces of long files: prompt.py REPO_PIECE)
    files_end: int               # where the files end: the buffer outside a cursor's window follows (spm)

    @classmethod
    def of(cls, prompt: Prompt) -> RepositoryPart:
        return cls(prompt.ids[:prompt.local_start], [b for b in prompt.boundaries if b < prompt.local_start],
                   prompt.outside_start)

    @classmethod
    def document(cls, prompt: Prompt) -> RepositoryPart:
        """The repository part and the prompt's document up to its last anchor line, snapshotted at its anchors
        (the repository part alone for a document too short to have one)."""
        end = prompt.anchors[-1] if prompt.anchors else prompt.local_start
        return cls(prompt.ids[:end], [b for b in prompt.boundaries if b <= prompt.local_start] + prompt.anchors[:-1],
                   end)


class RepositoryPrefill:
    def __init__(self, state: StateCache, lock: threading.Lock, files: StateFiles | None = None) -> None:
        self.state, self.lock, self.files = state, lock, files
        self._loaded: set[Path] = set()                     # workspaces whose saved state was read
        self.fed = 0                                        # tokens run through the model so far
        self.on_progress: Callable[[Path, int, int], None] = lambda root, done, total: None   # tokens in state
        self.ready: dict[Path, RepositoryPart] = {}       # per workspace: the last part prefilled in full
        self._wanted: dict[Path, tuple[RepositoryPart, RepositoryPart | None]] = {}   # and the document after it
        self._changed = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._worker: threading.Thread | None = None
        self._requests = 0                                  # requests waiting for the engine lock or holding it
        self._stopping = False
        _LIVE.add(self)

    @contextmanager
    def request(self) -> Iterator[None]:
        """Around a request's hold of the engine lock: the worker lets it go first (a lock is not fair: the
        worker would take it back between two segments before a waiting request thread wakes)."""
        with self._changed:
            self._requests += 1
        try:
            yield
        finally:
            with self._changed:
                self._requests -= 1
                self._changed.notify_all()

    def _in_turn(self, work: Callable[[], T]) -> T:
        """`work()` on the model thread, in the worker's hold of the engine lock, once no request waits for it."""
        with self._changed:
            self._changed.wait_for(lambda: self._requests == 0)
        with self.lock:
            return on_model_thread(work)

    def usable(self, root: Path, part: RepositoryPart) -> RepositoryPart | None:
        """`part` if the state tree holds it; else ask for it and return the last ready part (or none).
        The caller holds the engine lock."""
        if self.state.holds(part.ids):
            self.ready[root] = part
            return part
        self.want(root, part)
        return self.ready.get(root)

    def want(self, root: Path, part: RepositoryPart, document: RepositoryPart | None = None) -> None:
        """Prefill `part`, then `document`, in the background (replacing what was wanted for `root` before)."""
        with self._changed:
            self._wanted[root] = (part, document)
            self._idle.clear()
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="rustle-prefill", daemon=True)
                self._worker.start()
            self._changed.notify()

    def forget(self, root: Path) -> None:
        """Drop the part ready for `root`, as in a new session (`rustle eval lines --served`: a task after another in
        the same file must not be served with that one's buffer, which holds this task's line)."""
        with self._changed:
            self.ready.pop(root, None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is left to prefill (tests, benchmarks); False on timeout."""
        return self._idle.wait(timeout)

    def wait_ready(self, root: Path, timeout: float | None = None) -> bool:
        """Block until a repository part of `root` is ready (benchmarks); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: root in self.ready, timeout)

    def close(self) -> None:
        """Stop the worker between two segments and wait for it: a daemon thread still inside the model when
        the interpreter exits aborts the process."""
        with self._changed:
            self._stopping = True
            self._wanted.clear()
            self._changed.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=60)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._wanted and not self._stopping:
                    self._idle.set()
                    self._changed.wait()
                if self._stopping:
                    self._idle.set()
                    return
                root, (part, document) = self._wanted.popitem()
            try:
                if self._prefill(root, part):
                    with self._changed:
                        last = self.ready.get(root)
                        if last is None or last.ids[:len(part.ids)] != part.ids:   # a part that goes on from this
                            self.ready[root] = part                                  # one (a cursor's) serves on
                        self._changed.notify_all()
                    if document is not None:
                        self._prefill(root, document, repository=len(part.ids))
            except Exception:  # the worker outlives a bad part; requests go on with what is ready
                log.exception("background prefill of %s failed", root)

    def _prefill(self, root: Path, part: RepositoryPart, repository: int | None = None) -> bool:
        """Feed `part` segment by segment (after adopting the state saved for `root`, the first time), then save
        it; False if a newer part was wanted for `root` meanwhile. `repository`: `part` is a document's lines
        after the repository part that ends there (kept on disk too; its progress is not reported)."""
        if self.files is not None and root not in self._loaded:
            self._loaded.add(root)
            self._in_turn(lambda: self.files.load(root, self.state))
        ends = [*part.boundaries, len(part.ids)]
        # a saved snapshot deep into the part skips every file before it
        done = self._in_turn(lambda: self.state.deepest(part.ids, ends))
        report = self.on_progress if repository is None else lambda root, done, total: None
        report(root, done, len(part.ids))
        computed = False
        # a repository part resumes after its deepest snapshot; a document feeds every anchor it lacks (the one
        # saved at its end serves no cursor above it)
        for end in (e for e in ends if e > done or (repository is not None and e > repository)):
            if root in self._wanted or self._stopping:
                return False
            fed = self._in_turn(lambda: self._feed(part, end))
            if fed is not None:
                self.fed += fed
                computed |= end <= part.files_end
            report(root, end, len(part.ids))
        if computed and self.files is not None:   # the files only: a cursor's own part is another one's next time
            kept = part.ids[:part.files_end]
            self._in_turn(lambda: self.files.save(root, self.state, kept, [b for b in part.boundaries if b < len(kept)],
                                                  keep=set() if repository is None else {repository}))
        return True

    def _feed(self, part: RepositoryPart, end: int) -> int | None:
        """Feed `part` up to `end` unless the state tree holds it: the tokens computed, or None."""
        if self.state.holds(part.ids[:end]):
            return None
        _, stats = self.state.prefill(part.ids[:end], [b for b in part.boundaries if b < end], keep_end=True)
        return stats.computed


@atexit.register
def _close_all() -> None:
    for prefill in list(_LIVE):
        prefill.close()
