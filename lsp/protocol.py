"""Rustle's own messages beside the standard LSP ones: their method names and payloads, in one place.

The editor plugins mirror what they use of it: the constants at the top of editors/vscode/src/extension.ts
and the `protocol` table of editors/nvim/lua/rustle/init.lua (tests/test_protocol.py keeps them in step).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

PARTIAL = "rustle/partialCompletion"  # server → client: the suggestion as it grows
STATUS = "rustle/status"              # server → client: loading, indexing, ready or failed
ACCEPT = "rustle/didAccept"           # client → server: the user took (part of) a suggestion
REJECT = "rustle/didReject"           # client → server: the user dismissed it
ACCEPTED_COMMAND = "rustle.accepted"  # the inline item's command: clients with native ghost text run it after Tab


@dataclass(frozen=True)
class Position:
    line: int
    character: int


@dataclass(frozen=True)
class PartialCompletion:
    uri: str
    position: Position
    text: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Status:
    state: str                        # "begin" | "report" | "ready" | "failed"
    message: str
    model: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Feedback:
    """A didAccept / didReject notification, or the accepted command's argument."""
    uri: str
    text: str                         # the whole suggestion
    position: Position | None = None
    accepted_text: str | None = None  # JSON "acceptedText": the part taken (a word, a line), when not all

    @classmethod
    def from_json(cls, value: object) -> "Feedback | None":
        """The payload as a client sent it; None when it has no suggestion text."""
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            return None
        where = value.get("position")
        position = None
        if isinstance(where, dict) and isinstance(where.get("line"), int) and isinstance(where.get("character"), int):
            position = Position(where["line"], where["character"])
        accepted = value.get("acceptedText")
        return cls(str(value.get("uri", "")), value["text"], position, accepted if isinstance(accepted, str) else None)
