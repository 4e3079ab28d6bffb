"""An answer that grows on a worker thread while the terminal shows it, and that Ctrl-C can stop."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Work = Callable[[Callable[[str], None], threading.Event], str]   # (show the text so far, stop) -> final text


@dataclass
class Stream:
    """`texts()` yields the whole text so far after each change, the final text last; `stop()` ends the work at
    its next token (the text so far stays)."""
    language: str                        # "rust" (code) or "markdown" (prose)
    work: Work
    title: str = ""                      # who answers, when not the code model
    status: str = ""                     # shown until the first text arrives
    stopped: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None

    def stop(self) -> None:
        self.stopped.set()

    def texts(self) -> Iterator[str]:
        updates: queue.Queue = queue.Queue()
        done = object()

        def run() -> None:
            try:
                updates.put(self.work(updates.put, self.stopped))
            except Exception as err:     # shown by the terminal as an error; the conversation goes on
                self.error = err
            finally:
                updates.put(done)

        worker = threading.Thread(target=run, daemon=True, name="chat-answer")
        worker.start()
        try:
            while (text := updates.get()) is not done:
                yield text
        finally:                         # also on Ctrl-C in the reader: the worker stops and is waited for
            self.stopped.set()
            worker.join()
