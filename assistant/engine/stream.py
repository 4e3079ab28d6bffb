"""Streaming: one running suggestion on a worker thread, readable by several requests (the one that started
it and requests that type along it), handed back to the event loop as it grows."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

from .request import Completion, Request

Run = Callable[[Request, Callable[[str], None], threading.Event], Completion]


class Generation:
    def __init__(self, run: Run, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request, self.loop = request, loop
        self.text, self.final, self.error = "", None, None
        self.cancelled = threading.Event()
        self.changed = asyncio.Event()
        self.listeners = 0
        self.thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self.thread.start()

    def _run(self, run: Run) -> None:
        try:
            result = run(self.request, self._update, self.cancelled)
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
        """The suggestion past the `typed` characters as it grows; the last item is the final text."""
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
