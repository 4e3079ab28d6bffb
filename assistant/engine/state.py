"""Model state reuse: a prompt is fed in segments (a repository file, the suffix, a line of the prefix) and a
snapshot is kept at every segment boundary, keyed by the tokens before it (a digest of them).

The snapshots form a tree (model/cache.py: restoring one never invalidates another), so switching files,
moving the cursor, typing and deleting each restore the deepest snapshot their prompt starts with and feed
only the rest, with the same segmentation a cold run would use: a warm run computes exactly what a cold
run computes. A memory budget evicts the least recently used snapshots.
"""
from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

import torch

from model.cache import Cache, Snapshot, held_bytes
from model.model import RustleLM

MAX_SEGMENT = 4096      # longer segments are fed in pieces (bounded activation memory)
SHARED_BLOCK = 4096     # ids compared at a time with the last prompt's, to find the part already in bytes


@dataclass
class Checkpoint:
    snapshot: Snapshot
    used: int                # the request count when it was last on a prompt's path (LRU eviction)


@dataclass
class PrefillStats:
    reused: int = 0          # prompt tokens served from a snapshot
    computed: int = 0        # prompt tokens run through the model
    snapshots: int = 0       # live snapshots after this prompt
    held_mb: float = 0.0     # memory the cache and its snapshots keep alive


def prefix_digests(ids: list[int], positions: set[int], raw: bytes | None = None) -> dict[int, bytes]:
    """A digest of ids[:p] for each p in `positions` (one pass over the ids; `raw`: the ids as int32 bytes)."""
    raw = array("i", ids).tobytes() if raw is None else raw
    hasher, done, out = hashlib.blake2b(digest_size=16), 0, {}
    for p in sorted(positions):
        hasher.update(raw[4 * done:4 * p])
        out[p], done = hasher.digest(), p
    return out


class PrefixDigests:
    """`prefix_digests` that keeps the bytes of the ids it was last given: consecutive prompts share their
    repository part (~80K tokens), and turning the ids into bytes, not hashing them, is the cost (~2 ms)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.raw = b""

    def __call__(self, ids: list[int], positions: set[int]) -> dict[int, bytes]:
        shared, n = 0, min(len(ids), len(self.ids))
        while shared < n:               # block by block: a list compare stops at the first difference
            end = min(shared + SHARED_BLOCK, n)
            if ids[shared:end] != self.ids[shared:end]:
                break
            shared = end
        self.raw = self.raw[:4 * shared] + array("i", ids[shared:]).tobytes()
        self.ids = list(ids)
        return prefix_digests(ids, positions, self.raw)


@dataclass
class StateCache:
    model: RustleLM
    budget_bytes: int = 768 << 20    # the cache and every snapshot together
    cache: Cache = field(init=False)
    checkpoints: dict[tuple[int, bytes], Checkpoint] = field(default_factory=dict)   # (position, digest) ->
    requests: int = 0
    digests: PrefixDigests = field(default_factory=PrefixDigests)

    def __post_init__(self) -> None:
        self.cache = self.model.new_cache()

    def holds(self, ids: list[int]) -> bool:
        """Whether a snapshot of exactly `ids` is kept (a prefill of them would compute nothing)."""
        return (len(ids), self.digests(ids, {len(ids)})[len(ids)]) in self.checkpoints

    def deepest(self, ids: list[int], positions: list[int]) -> int:
        """The largest of `positions` at which a snapshot of `ids` is kept (0 when none is)."""
        digests = self.digests(ids, set(positions))
        return max((p for p, d in digests.items() if (p, d) in self.checkpoints), default=0)

    @torch.inference_mode()
    def prefill(self, ids: list[int], boundaries: list[int], keep_end: bool = False) -> tuple[torch.Tensor,
                                                                                              PrefillStats]:
        """Make the cache hold exactly `ids`; returns the logits after the last token.

        `boundaries` are the positions (sorted, within 1..len(ids)-1) where segments end; `keep_end` keeps a
        snapshot at the end too (the repository part, prefilled ahead of requests)."""
        self.requests += 1
        cuts = [b for b in boundaries if 0 < b < len(ids)] + ([len(ids)] if keep_end else [])
        digests = self.digests(ids, {p for p, _ in self.checkpoints if p <= len(ids)} | set(cuts))
        on_path = [c for (p, d), c in self.checkpoints.items() if digests.get(p) == d]
        for c in on_path:
            c.used = self.requests
        start = 0
        on_path = [c for c in on_path if c.snapshot.position < len(ids)]   # logits need a token fed
        if on_path:
            best = max(on_path, key=lambda c: c.snapshot.position)
            self.cache.restore(best.snapshot)
            start = best.snapshot.position
        else:
            self.cache = self.model.new_cache()
        logits, position = None, start
        for end in sorted({b for b in cuts if b > start} | {len(ids)}):
            for piece in range(position, end, MAX_SEGMENT):
                stop = min(end, piece + MAX_SEGMENT)
                logits = self.model(self._tensor(ids[piece:stop]), self.cache, last=1)[0, -1]
            position = end
            key = (end, digests.get(end))
            if (end < len(ids) or keep_end) and key not in self.checkpoints:
                self.checkpoints[key] = Checkpoint(self.cache.snapshot(), self.requests)
        held = self._evict()
        assert logits is not None  # a checkpoint is only used before the prompt's end
        return logits, PrefillStats(start, len(ids) - start, len(self.checkpoints), held / 2**20)

    def path(self, ids: list[int], boundaries: list[int]) -> dict[tuple[int, bytes], Snapshot]:
        """The snapshots kept at `boundaries` and at the end of `ids`, by key, in order (what persist.py saves)."""
        digests = self.digests(ids, {*boundaries, len(ids)})
        return {(p, d): self.checkpoints[(p, d)].snapshot for p, d in sorted(digests.items())
                if (p, d) in self.checkpoints}

    def adopt(self, snapshots: dict[tuple[int, bytes], Snapshot]) -> None:
        """Keep snapshots made elsewhere (read from disk), unless one with the same key is kept already."""
        for key, snap in snapshots.items():
            if key in self.checkpoints:
                self.cache.forget(snap)
            else:
                self.checkpoints[key] = Checkpoint(snap, self.requests)
        self._evict()

    @torch.inference_mode()
    def feed(self, ids: list[int]) -> torch.Tensor:
        """Append generated tokens; logits after each: [len(ids), V]."""
        return self.model(self._tensor(ids), self.cache)[0]

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.model.embed.weight.device)

    @torch.inference_mode()
    def mark(self) -> Snapshot:
        return self.cache.snapshot()

    @torch.inference_mode()
    def rewind(self, snap: Snapshot) -> None:
        """Back to a mark taken during generation (a rejected draft); the mark is used up."""
        self.cache.restore(snap)
        self.cache.forget(snap)

    def _evict(self) -> int:
        """Forget least recently used snapshots until the cache and the rest fit the budget; the bytes held."""
        held = held_bytes(self.cache, [c.snapshot for c in self.checkpoints.values()])
        # oldest use first; within one use, the deepest first (a branch's shared root outlives its tips)
        order = sorted(self.checkpoints, key=lambda k: (self.checkpoints[k].used, -k[0]))
        while held > self.budget_bytes and order:
            self.cache.forget(self.checkpoints.pop(order.pop(0)).snapshot)
            held = held_bytes(self.cache, [c.snapshot for c in self.checkpoints.values()])
        return held
