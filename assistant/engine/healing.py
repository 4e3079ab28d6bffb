"""Token healing: the cursor rarely sits on a token boundary the model would choose ("    let x = fo|").

We drop the prompt's last token and let the model regenerate it, constrained to tokens whose bytes
agree with the dropped bytes ("fo" → " foo", " format", …); the dropped bytes are stripped from the
output afterwards. Without it the model sees an unusual split and tends to start with a stray space.
"""
from __future__ import annotations

import bisect

import torch


class Healer:
    """Which tokens may come next while `pending` bytes of the prompt are still to be reproduced."""

    def __init__(self, token_bytes: list[bytes]) -> None:
        self.token_bytes = token_bytes
        self.order = sorted((b, i) for i, b in enumerate(token_bytes) if b)
        self.keys = [b for b, _ in self.order]
        self.by_bytes: dict[bytes, list[int]] = {}
        for b, i in self.order:
            self.by_bytes.setdefault(b, []).append(i)

    def allowed(self, pending: bytes, whole: bool = False) -> list[int]:
        """Tokens that start with `pending`, or are a proper prefix of it. The rest of a line's indentation (the
        cursor after it: `whole`) is the tokenizer's own split, never a shorter run then spaces: only tokens that
        write all of it (else a small model picks a shallower indent, then loops on spaces: an empty suggestion); a
        deeper indent or a merge (`⏎    }`) is one token still. Spaces inside a line keep the proper prefixes:
        `x  = 1` is tokenized `x`, ` `, ` =`, ` 1`."""
        j = bisect.bisect_left(self.keys, pending)
        ids = []
        while j < len(self.keys) and self.keys[j].startswith(pending):  # sorted: they form one run
            ids.append(self.order[j][1])
            j += 1
        if whole:
            return ids
        for n in range(1, len(pending)):
            ids += self.by_bytes.get(pending[:n], [])
        return ids

    def mask(self, logits: torch.Tensor, pending: bytes, whole: bool = False) -> torch.Tensor:
        allowed = self.allowed(pending, whole)
        masked = torch.full_like(logits, float("-inf"))
        masked[allowed] = logits[allowed]
        return masked


def back_up(prompt: list[int], token_bytes: list[bytes], max_tokens: int = 1) -> tuple[list[int], bytes]:
    """The prompt without its last `max_tokens` text tokens, and the bytes they stood for."""
    cut = len(prompt)
    while cut > 0 and len(prompt) - cut < max_tokens and token_bytes[prompt[cut - 1]]:
        cut -= 1
    return prompt[:cut], b"".join(token_bytes[i] for i in prompt[cut:])


def consume(pending: bytes, token: bytes) -> bytes:
    """What remains to reproduce after `token` was generated (b"" once the healed bytes are all out)."""
    return pending[len(token):] if len(token) < len(pending) else b""
