"""The JSON-RPC layer under pygls's language server protocol, with two gaps closed so that every request is
answered: a request whose parameters do not fit its method's types gets an InvalidParams (-32602) error
response, where pygls only showed the user a message and left the request unanswered; and a request after
`shutdown` gets an InvalidRequest (-32600) error, where pygls dropped it. Failures are logged one line each
(`one_line`), never with a traceback.
"""
from __future__ import annotations

import logging

from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger("rustle.lsp")
EXIT = "exit"


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
        super().handle_message(message)


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
