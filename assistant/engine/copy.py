"""The repository copy model: code repeats itself, so what followed the last few tokens elsewhere in the
workspace is a strong guess for what follows them now.

An n-gram table maps every `n_min`-token window to the positions after it. A lookup extends each hit
backwards to find the longest matches (up to `n_max` tokens) and returns what followed them. The engine
uses it twice: to draft tokens that the model verifies in one forward pass (speculative decoding), and
to mix a copy distribution into the model's where the recent tokens occurred before.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CopyConfig:
    n_min: int = 4             # shortest match that counts
    n_max: int = 16            # longest match measured
    max_hits: int = 64         # most recent occurrences examined per lookup
    draft_tokens: int = 8      # longest draft proposed for verification
    weight_per_token: float = 0.1   # mixture weight grows with the match length…
    max_weight: float = 0.6         # …up to this


class CopyModel:
    def __init__(self, config: CopyConfig = CopyConfig()) -> None:
        self.config = config
        self.tokens: list[int] = []
        self.table: dict[tuple[int, ...], list[int]] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, ids: list[int]) -> None:
        n, start = self.config.n_min, len(self.tokens)
        self.tokens.extend(ids)
        for end in range(max(n, start + 1), len(self.tokens) + 1):
            self.table.setdefault(tuple(self.tokens[end - n:end]), []).append(end)

    def truncate(self, length: int) -> None:
        """Forget tokens from `length` on (the per-request part appended after the repository)."""
        n = self.config.n_min
        for end in range(len(self.tokens), max(n, length + 1) - 1, -1):
            key = tuple(self.tokens[end - n:end])
            hits = self.table[key]
            hits.pop()
            if not hits:
                del self.table[key]
        del self.tokens[length:]

    def matches(self, history: list[int]) -> tuple[int, list[int]]:
        """(longest match length, positions right after each longest match), most recent first.

        A position equal to len(history)'s own end is skipped, so a text never matches itself."""
        n = self.config.n_min
        if len(history) < n:
            return 0, []
        hits = self.table.get(tuple(history[-n:]), [])[-self.config.max_hits:]
        best, where = 0, []
        for end in reversed(hits):
            if end >= len(self.tokens):  # nothing follows
                continue
            length = n
            while (length < self.config.n_max and length < len(history) and end - length - 1 >= 0
                   and self.tokens[end - length - 1] == history[-length - 1]):
                length += 1
            if length > best:
                best, where = length, [end]
            elif length == best:
                where.append(end)
        return best, where

    def draft(self, history: list[int], limit: int | None = None) -> list[int]:
        """What followed the most recent longest match, up to `limit` tokens."""
        length, where = self.matches(history)
        if not where:
            return []
        end = where[0]
        return self.tokens[end:end + (limit or self.config.draft_tokens)]

    def mix(self, probs: torch.Tensor, history: list[int]) -> torch.Tensor:
        """The model's next-token probabilities interpolated with the copy distribution (when there is one)."""
        length, where = self.matches(history)
        if not where:
            return probs
        counts = Counter(self.tokens[end] for end in where)
        copy = torch.zeros_like(probs)
        for token, count in counts.items():
            copy[token] = count / len(where)
        weight = min(self.config.max_weight, self.config.weight_per_token * (length - self.config.n_min + 1))
        return (1 - weight) * probs + weight * copy
