"""What a caller asks the engine for and what it gets back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Request:
    root: Path | None                    # the workspace; None: a document outside every workspace, completed
                                         # from its buffer alone (nothing indexed, nothing read from disk)
    path: str                            # relative to root, posix (outside a workspace: the buffer's name)
    text: str                            # the editor buffer
    offset: int                          # cursor, in characters
    overrides: dict[str, str] = field(default_factory=dict)  # unsaved buffers: path -> text, instead of disk

    def position_error(self) -> str | None:
        if not 0 <= self.offset <= len(self.text):
            return f"cursor offset {self.offset} is outside the buffer (0..{len(self.text)})"
        return None


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
