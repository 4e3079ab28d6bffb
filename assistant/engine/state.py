"""Model state reuse: a prompt is fed in segments (a repository file, the suffix, a line of the prefix) and a
snapshot is kept at every segment boundary, keyed by the tokens before it.

A new prompt restores the deepest snapshot whose tokens it starts with and feeds only the rest, with the
same segmentation a cold run would use, so a warm run computes exactly what a cold run computes. The
cache is one timeline: restoring an earlier snapshot invalidates the ones after it (model.cache.Cache).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model.cache import Cache, Snapshot
from model.model import RustleLM

MAX_SEGMENT = 4096      # longer segments are fed in pieces (bounded activation memory)


@dataclass
class Checkpoint:
    position: int
    snapshot: Snapshot


@dataclass
class PrefillStats:
    reused: int = 0          # prompt tokens served from a snapshot
    computed: int = 0        # prompt tokens run through the model
    snapshots: int = 0       # live snapshots after this prompt


@dataclass
class StateCache:
    model: RustleLM
    max_snapshots: int = 192          # ~0.8 MB each for the shipped model: bounded memory
    cache: Cache = field(init=False)
    fed: list[int] = field(default_factory=list)        # the tokens the cache currently holds
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache = self.model.new_cache()

    def reset(self) -> None:
        self.cache = self.model.new_cache()
        self.fed, self.checkpoints = [], []

    def _common(self, ids: list[int]) -> int:
        n = min(len(ids), len(self.fed))
        a, b = torch.tensor(ids[:n]), torch.tensor(self.fed[:n])
        diff = (a != b).nonzero()
        return n if len(diff) == 0 else int(diff[0])

    @torch.inference_mode()
    def prefill(self, ids: list[int], boundaries: list[int]) -> tuple[torch.Tensor, PrefillStats]:
        """Make the cache hold exactly `ids`; returns the logits after the last token.

        `boundaries` are the positions (sorted, within 1..len(ids)-1) where segments end."""
        common = self._common(ids)
        self.checkpoints = [c for c in self.checkpoints if c.snapshot.valid]
        usable = [c for c in self.checkpoints if c.position <= common and c.position < len(ids)]
        start = 0
        if usable:
            best = max(usable, key=lambda c: c.position)
            self.cache.restore(best.snapshot)
            start = best.position
        else:
            self.cache = self.model.new_cache()
            self.checkpoints = []
        self.checkpoints = [c for c in self.checkpoints if c.snapshot.valid]
        cuts = [b for b in boundaries if start < b < len(ids)] + [len(ids)]
        logits, position = None, start
        for end in cuts:
            for piece in range(position, end, MAX_SEGMENT):
                stop = min(end, piece + MAX_SEGMENT)
                logits = self.model(torch.tensor([ids[piece:stop]]), self.cache, last=1)[0, -1]
            position = end
            if end < len(ids) and not any(c.position == end for c in self.checkpoints):
                self.checkpoints.append(Checkpoint(end, self.cache.snapshot()))
        self._trim()
        self.fed = list(ids)
        assert logits is not None  # a checkpoint is only used before the prompt's end
        return logits, PrefillStats(start, len(ids) - start, len(self.checkpoints))

    @torch.inference_mode()
    def feed(self, ids: list[int]) -> torch.Tensor:
        """Append generated tokens; logits after each: [len(ids), V]."""
        logits = self.model(torch.tensor([ids]), self.cache)[0]
        self.fed.extend(ids)
        return logits

    def mark(self) -> Snapshot:
        return self.cache.snapshot()

    def rewind(self, snap: Snapshot) -> None:
        """Back to a mark taken during generation (a rejected draft)."""
        self.cache.restore(snap)
        self.cache.forget(snap)
        del self.fed[snap.position:]
        self.checkpoints = [c for c in self.checkpoints if c.snapshot.valid]

    def _trim(self) -> None:
        """Past max_snapshots, drop every other early one: late boundaries (the document) matter most."""
        while len(self.checkpoints) > self.max_snapshots:
            self.checkpoints.sort(key=lambda c: c.position)
            dropped = self.checkpoints[1:len(self.checkpoints) // 2:2]
            for c in dropped:
                self.cache.forget(c.snapshot)
            self.checkpoints = [c for c in self.checkpoints if c.snapshot.valid]
