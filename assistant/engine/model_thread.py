"""The one thread of the process that runs the model.

OpenMP (PyTorch's intra-op threads, and the C kernels') keeps a team of worker threads for every thread that starts
parallel work, and libgomp stops its workers spinning between two parallel regions once its teams together hold
more threads than the machine has cores: each op then waits for a futex wake. A server that ran requests on one
thread and the repository prefill on another paid that on each of a new cursor's ~2,000 ops (two cores: 90 ms a
new cursor with one team, 170-300 ms with two; BENCHMARKS.md). So every engine loads its model, runs its forwards
and loads and saves its states here, one piece of work at a time, in the order they come; the engine's lock and
the background prefill's turns still decide who goes next. Before each piece of work it takes as many threads as
other processes leave cores idle (`cores.py`), unless the engine was given a fixed count.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import torch

from .cores import IdleCores

T = TypeVar("T")


class ModelThread:
    """A daemon thread that runs what it is given; `run` waits for the result (or raises the work's exception)."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Future, Callable[[], object]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="rustle-model", daemon=True)
        self.cores: IdleCores | None = None     # set on the thread itself (`fit_threads`)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            future, work = self._work.get()
            if self.cores is not None and (n := self.cores.threads()) != torch.get_num_threads():
                torch.set_num_threads(n)
            try:
                future.set_result(work())
            except BaseException as error:      # the caller re-raises it; the thread serves on
                future.set_exception(error)

    def run(self, work: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:   # work that asks for more work: run it in place
            return work()
        future: Future = Future()
        self._work.put((future, work))
        return future.result()


_made = threading.Lock()
_thread: ModelThread | None = None


def on_model_thread(work: Callable[[], T]) -> T:
    """`work()` run on the process's model thread (started on first use)."""
    global _thread
    with _made:
        if _thread is None:
            _thread = ModelThread()
    return _thread.run(work)


def fit_threads(threads: int | None) -> None:
    """On the model thread: use `threads` threads from now on, or (None) as many as other processes leave cores
    idle, up to PyTorch's own count when first asked."""
    assert _thread is not None and threading.current_thread() is _thread._thread, "call it on the model thread"
    if threads:
        torch.set_num_threads(threads)
        _thread.cores = None
    elif _thread.cores is None:
        _thread.cores = IdleCores(torch.get_num_threads())
