"""The JSON-RPC layer under pygls's language server protocol, with its gaps closed so that every request is
answered and no input silences the server:
- a request whose parameters do not fit its method's types gets an InvalidParams (-32602) error response,
  where pygls only showed the user a message and left the request unanswered; a request after `shutdown` gets
  an InvalidRequest (-32600) error, where pygls dropped it;
- `read_messages` replaces pygls's stdio reader, which matched only an exact `Content-Length: N\r\n` line and
  read any length it was given: one lower-case header or LF-only frame left it deaf to every later message,
  and a length of 10^14 killed it. Here headers are matched case-insensitively wherever they start in a line
  (so the stream resynchronises on the next header after a wrong length), lines end in LF or CRLF, and a
  message over MAX_MESSAGE is skipped with a log line;
- an async or threaded notification handler's future is dropped when it is done, where pygls kept it forever;
- `shutdown` cancels the handlers still running before pygls does: pygls cancels them while iterating the dict
  their done callbacks pop from, and answered a shutdown during startup (or a pending request) with an error;
- failures are logged one line each (`one_line`), never with a traceback.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable

from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger("rustle.lsp")
EXIT = "exit"
SHUTDOWN = "shutdown"
MAX_MESSAGE = 64 << 20               # bytes: a message longer than this is skipped, not read
MAX_LINE = 1 << 16                   # a header line is read in pieces of at most this much
CONTENT_LENGTH = re.compile(rb"content-length:[ \t]*(\d+)", re.IGNORECASE)


class Answered:
    """What a message already answered with an error becomes: handle_message skips it."""
    jsonrpc = "2.0"


ANSWERED = Answered()


class AnsweringProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict):
        try:
            return super().structure_message(data)
        except JsonRpcException as err:
            if not (isinstance(data, dict) and "id" in data and "method" in data):
                raise                                      # a notification or a response: nobody to answer
            log.warning("%s (id %s): %s", data["method"], data["id"], type(err).__name__)
            self._send_response(data["id"], error=err.to_response_error())
            return ANSWERED

    def handle_message(self, message) -> None:
        if message is ANSWERED:
            return
        if self._shutdown and getattr(message, "method", EXIT) != EXIT:
            if getattr(message, "id", None) is not None:    # a request: answered, not dropped
                error = JsonRpcInvalidRequest("the server is shutting down: only `exit` is taken now")
                self._send_response(message.id, error=error.to_response_error())
            return
        if getattr(message, "method", None) == SHUTDOWN:
            for future in list(self._request_futures.values()):   # a copy: each cancel pops its own entry
                future.cancel()
        super().handle_message(message)

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None):
        if callback == self._check_handler_result:    # a notification: pygls (2.1) keeps an async or threaded
            check = callback                          # handler's future forever (~1 KB each); dropped when done

            def callback(future, msg_id=msg_id):
                self._request_futures.pop(msg_id, None)
                check(future)
        return super()._execute_handler(msg_id, handler, callback, args, kwargs)


class OneLine(logging.Filter):
    """A log record as its first line, without a traceback: one line per failure. pygls's own line for a message
    it cannot deserialize is dropped: the line that says what happened to it follows (ours, or pygls's reader's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pygls") and record.getMessage().startswith("Unable to deserialize"):
            return False
        record.msg, record.args = (record.getMessage().splitlines() or [""])[0], None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def one_line() -> None:
    """Every handler of the root logger writes records as one line (the server's log is its stderr)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(OneLine())


class Reader:
    """Lines (of at most MAX_LINE bytes) and bodies from a binary stream, read on a worker thread."""

    def __init__(self, stream: BinaryIO, executor: ThreadPoolExecutor | None = None) -> None:
        self.stream, self.executor = stream, executor

    async def line(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stream.readline, MAX_LINE)

    async def body(self, n: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stream.read, n)


async def read_messages(stop: threading.Event, reader: Reader, protocol: AnsweringProtocol,
                        on_error: Callable[[Exception, type], object]) -> None:
    """Frame messages off the stream and hand each to the protocol until the stream ends or `stop` is set."""
    length: int | None = None
    while not stop.is_set():
        line = await reader.line()
        if not line:
            return
        found = CONTENT_LENGTH.search(line)
        if found:                        # also when glued to the end of a body that was longer than announced
            length = int(found.group(1))
            continue
        if line.strip() or length is None:
            continue                     # another header, or bytes between frames: skipped until a header
        if length > MAX_MESSAGE:
            log.warning("a message of %d bytes skipped (at most %d are read)", length, MAX_MESSAGE)
            length = None
            continue
        body, length = await reader.body(length), None
        try:
            protocol.handle_message(json.loads(body, object_hook=protocol.structure_message))
        except Exception as err:         # not JSON, not UTF-8, not a message: reported, the next one read
            log.warning("a message could not be read: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
            on_error(err, JsonRpcException)
