"""The server's settings: initializationOptions and `workspace/didChangeConfiguration`, under "rustle"."""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace

from assistant.engine.engine import DEFAULT_MODEL, CONTEXTS

log = logging.getLogger("rustle.lsp")


BOUNDS = {"max_tokens": (1, 4096), "debounce_ms": (0, 60_000), "max_ms": (1.0, 600_000.0)}


@dataclass(frozen=True)
class Settings:
    model: str = str(DEFAULT_MODEL)
    max_tokens: int = 48
    debounce_ms: int = 60
    multiline: bool = True
    context: str = "repo"
    max_ms: float = 4000.0
    device: str = "cpu"             # "cuda": serve on the GPU

    def updated(self, values: object) -> "Settings":
        """These settings with the known keys of a client's dict applied; wrong types and numbers out of their
        range (BOUNDS) are ignored, logged."""
        if not isinstance(values, dict):
            return self
        values = values.get("rustle", values)
        if not isinstance(values, dict):
            return self
        changes = {}
        for f in fields(self):
            camel = "".join(w.capitalize() if i else w for i, w in enumerate(f.name.split("_")))
            key = f.name if f.name in values else camel  # max_tokens or maxTokens
            if key in values:
                value, kind = values[key], type(getattr(self, f.name))
                low, high = BOUNDS.get(f.name, (None, None))
                if isinstance(value, bool) and kind is not bool:
                    log.warning("setting %s: expected %s, got %r", key, kind.__name__, value)
                elif isinstance(value, kind) or (kind is float and isinstance(value, int)):
                    if low is not None and not low <= value <= high:
                        log.warning("setting %s: %r is outside %s..%s, ignored", key, value, low, high)
                    else:
                        changes[f.name] = kind(value)
                else:
                    log.warning("setting %s: expected %s, got %r", key, kind.__name__, value)
        return replace(self, **changes)

    @property
    def context_mode(self) -> str:
        """The context setting, or "repo" where a client sent an unknown one."""
        return self.context if self.context in CONTEXTS else "repo"
