"""Per-layer decode state, and the whole model's cache with cheap snapshot/restore at a token position.

Snapshots form a tree, not a timeline: restoring one never invalidates another.
- KVCache (full) and LatentCache (lql) only ever append, into a Store shared with the snapshots taken on
  it. Where a branch would overwrite positions another snapshot still holds, it keeps the store up to its
  own position as a read-only segment and appends into a new store: branches share their common prefix,
  and attention reads the segments one after another (model/layers/common.py: `attend_segments`).
- MemoryCache (the model's memory of its context: model/memory.py) appends the same way.
- RingCache (swa) holds the last W positions; GDNState (gdn) a conv tail and an fp32 matrix per head:
  their snapshots are small copies, independent of the context length.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch

from kernels.attention.select import BLOCK, block_bounds

if TYPE_CHECKING:
    from .memory import MemoryReader


class Store:
    """Growable buffers along one time dimension, and the lengths of it that snapshots and branches hold."""

    def __init__(self, buffers: list[torch.Tensor], dim: int) -> None:
        self.buffers, self.dim = buffers, dim
        self.pins: Counter[int] = Counter()
        self.bounds: tuple[torch.Tensor, torch.Tensor] | None = None   # LatentCache.bounds: the blocks ending here

    def capacity(self) -> int:
        return self.buffers[0].shape[self.dim]

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)

    def pin(self, length: int) -> None:
        self.pins[length] += 1

    def unpin(self, length: int) -> None:
        self.pins[length] -= 1
        if self.pins[length] <= 0:
            del self.pins[length]


Segment = tuple[Store, int]        # a store's first positions, read only


@dataclass(frozen=True)
class Span:
    """An append-only layer's snapshot: the segments before its store, its store, and its length in all."""
    base: tuple[Segment, ...]
    store: Store
    offset: int                    # positions in `base`
    length: int


class AppendCache:
    """What KVCache and LatentCache share: append into a Store after read-only segments of earlier branches."""

    def __init__(self, buffers: list[torch.Tensor], dim: int) -> None:
        self.store, self.base, self.offset, self.length = Store(buffers, dim), (), 0, 0

    def _write(self, new: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        count = new[0].shape[self.store.dim]
        own = self._reserve(count)
        for buffer, x in zip(self.store.buffers, new):
            buffer.narrow(self.store.dim, own, count).copy_(x)
        return self.segments()

    def _reserve(self, count: int) -> int:
        """Room for `count` more positions at the end of this cache's own store (branching off or growing it),
        counted in its length: where they begin in the store's buffers, for the caller to fill."""
        store, own = self.store, self.length - self.offset
        if max(store.pins, default=0) > own:          # another branch reads past our position: branch off
            if own:
                store.pin(own)                        # our segment of it, held while this cache reads it
                self.base = (*self.base, (store, own))
            self.store = store = Store([_resized(b, max(count, 256), store.dim, 0) for b in store.buffers], store.dim)
            self.offset, own = self.length, 0
        if store.bounds is not None:                  # the blocks ending past `own` change
            kept = (self.length // BLOCK) - (self.offset // BLOCK)
            store.bounds = tuple(b[:, :kept] for b in store.bounds)
        if own + count > store.capacity():            # snapshots on it see the bigger buffers too
            store.buffers = [_resized(b, max(own + count, 2 * store.capacity()), store.dim, own)
                             for b in store.buffers]
        self.length += count
        return own

    def segments(self) -> list[list[torch.Tensor]]:
        """Every position, as each segment's buffers (oldest first), the store's own last."""
        return [[b.narrow(s.dim, 0, n) for b in s.buffers]
                for s, n in (*self.base, (self.store, self.length - self.offset)) if n]

    def snapshot(self) -> Span:
        for store, n in self.base:
            store.pin(n)
        self.store.pin(self.length - self.offset)
        return Span(self.base, self.store, self.offset, self.length)

    def restore(self, saved: Span) -> None:
        for store, n in self.base:                    # this cache's own hold on its segments moves along
            store.unpin(n)
        self.base, self.store, self.offset, self.length = saved.base, saved.store, saved.offset, saved.length
        for store, n in self.base:
            store.pin(n)

    def forget(self, saved: Span) -> None:
        for store, n in saved.base:
            store.unpin(n)
        saved.store.unpin(saved.length - saved.offset)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for segment in self.segments() for b in segment)


class KVCache(AppendCache):
    """Keys and values of every position: [B, H, capacity, D] per store."""

    def __init__(self, batch: int, heads: int, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        k = torch.empty(batch, heads, 256, dim, dtype=dtype, device=device)
        super().__init__([k, torch.empty_like(k)], dim=2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every position's keys and values, by segment."""
        return [(k, v) for k, v in self._write([k, v])]


class LatentCache(AppendCache):
    """The lql latent of every position: [B, capacity, d] per store."""

    def __init__(self, batch: int, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__([torch.empty(batch, 256, dim, dtype=dtype, device=device)], dim=1)
        self.joined: tuple[list, tuple[torch.Tensor, torch.Tensor]] | None = None   # bounds() across segments

    def append(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Every position's latent, by segment."""
        return [z for (z,) in self._write([z])]

    def reserve(self, count: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`count` positions appended unwritten, for a kernel to write (kernels/decode): their latents' slots
        [B, count, d] and every position's latent by segment, those slots included."""
        own = self._reserve(count)
        return self.store.buffers[0].narrow(1, own, count), [z for (z,) in self.segments()]

    def bounds(self, keys: list[torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounds of the first n blocks of the latents (kernels/attention/select.py: `keys` are this cache's
        segments), each block's kept by the store it ends in, so a decode step computes only the newest. The join
        across segments is kept until a part changes (`joined`: the parts' bound tuples themselves, held so that
        no id is reused, and their lengths): a new block every 64 tokens, not a copy every step."""
        parts, held, start = [], [], 0
        for store, length in (*self.base, (self.store, self.length - self.offset)):
            first, end = start // BLOCK, min(n, (start + length) // BLOCK)   # the blocks that end in this segment
            start += length
            if end <= first:
                continue
            have = 0 if store.bounds is None else store.bounds[0].shape[1]
            if have < end - first:
                new = block_bounds(keys, first + have, end)
                store.bounds = new if store.bounds is None else tuple(torch.cat(x, 1) for x in zip(store.bounds, new))
            parts.append(tuple(b[:, :end - first] for b in store.bounds))
            held.append((store.bounds, end - first))
        if len(parts) <= 1:
            return parts[0] if parts else block_bounds(keys, 0, 0)
        if self.joined is None or len(self.joined[0]) != len(held) or any(
                bounds is not now or kept != count for (bounds, kept), (now, count) in zip(self.joined[0], held)):
            self.joined = (held, tuple(torch.cat(x, 1) for x in zip(*parts)))
        return self.joined[1]


class MemoryCache(AppendCache):
    """Every position's key for the model's memory (model/memory.py: its `reader` makes them from the final hidden
    state and the token), unit length, in fp16 [1, capacity, d]; and its token [1, capacity]."""

    def __init__(self, reader: MemoryReader, device: torch.device | str) -> None:
        self.reader = reader
        keys = torch.empty(1, 256, reader.key_hidden.shape[1], dtype=torch.float16, device=device)
        super().__init__([keys, torch.empty(1, 256, dtype=torch.long, device=device)], dim=1)

    def append(self, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
        """hidden [1, T, D] and tokens [1, T] of the positions just fed."""
        self._write([self.reader.keys(hidden, tokens).half(), tokens])


class RingCache:
    """The last `window` keys and values, oldest first when read: [B, H, window, D]."""

    def __init__(self, batch: int, heads: int, dim: int, window: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        self.k = torch.zeros(batch, heads, window, dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.window, self.seen = window, 0

    def recent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the last min(seen, window) positions, in order."""
        n = min(self.seen, self.window)
        start = (self.seen - n) % self.window
        order = (torch.arange(n, device=self.k.device) + start) % self.window
        return self.k[:, :, order], self.v[:, :, order]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        T = k.shape[2]
        if T == 1:                                # a decode step: one slot, no index tensor
            slot = self.seen % self.window
            self.k[:, :, slot:slot + 1].copy_(k)
            self.v[:, :, slot:slot + 1].copy_(v)
            self.seen += 1
            return
        if T >= self.window:
            k, v = k[:, :, -self.window:], v[:, :, -self.window:]
        slots = (torch.arange(self.seen + T - k.shape[2], self.seen + T, device=k.device)) % self.window
        self.k[:, :, slots] = k.to(self.k.dtype)  # under autocast k arrives in bf16
        self.v[:, :, slots] = v.to(self.v.dtype)
        self.seen += T

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.k.clone(), self.v.clone(), self.seen

    def restore(self, state: tuple[torch.Tensor, torch.Tensor, int]) -> None:
        k, v, self.seen = state
        self.k.copy_(k)
        self.v.copy_(v)

    def forget(self, state: tuple[torch.Tensor, torch.Tensor, int]) -> None:
        """Nothing to release: the snapshot is a copy."""

    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


class GDNState:
    """The gated-delta-rule state [B, H, K, V] (fp32) and the short convolution's last inputs [B, C, width-1]."""

    def __init__(self, batch: int, heads: int, k_dim: int, v_dim: int, channels: int, conv_size: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        self.state = torch.zeros(batch, heads, k_dim, v_dim, dtype=torch.float32, device=device)
        self.conv = torch.zeros(batch, channels, conv_size - 1, dtype=dtype, device=device)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.state.clone(), self.conv.clone()

    def restore(self, saved: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.state.copy_(saved[0])
        self.conv.copy_(saved[1])

    def forget(self, saved: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Nothing to release: the snapshot is a copy."""

    def nbytes(self) -> int:
        return self.state.numel() * 4 + self.conv.numel() * self.conv.element_size()


LayerCache = KVCache | LatentCache | RingCache | GDNState | MemoryCache


@dataclass
class Snapshot:
    position: int
    layers: list

    def stores(self) -> list[Store]:
        """The shared stores it holds lengths of (KV and latent layers)."""
        return [store for saved in self.layers if isinstance(saved, Span)
                for store in (saved.store, *(s for s, _ in saved.base))]

    @cached_property
    def copied_bytes(self) -> int:
        """Bytes of its own copies (ring and gdn layers); the stores are counted once by `held_bytes`. Counted once:
        a snapshot never changes, and the state cache sums them all on every request."""
        return sum(x.numel() * x.element_size() for saved in self.layers if not isinstance(saved, Span)
                   for x in saved if isinstance(x, torch.Tensor))


@dataclass
class Cache:
    """The whole model's decode state at `position` tokens: a cache per block, then the memory where the model
    has one (model/memory.py)."""
    layers: list[LayerCache]
    position: int = 0

    @property
    def memory(self) -> MemoryCache | None:
        return self.layers[-1] if self.layers and isinstance(self.layers[-1], MemoryCache) else None

    def snapshot(self) -> Snapshot:
        return Snapshot(self.position, [layer.snapshot() for layer in self.layers])

    def restore(self, snap: Snapshot) -> None:
        """Back (or over) to `snap`'s state; every other snapshot stays restorable."""
        for layer, saved in zip(self.layers, snap.layers):
            layer.restore(saved)
        self.position = snap.position

    def forget(self, snap: Snapshot) -> None:
        """Drop a snapshot the caller no longer needs: its positions may be overwritten, its copies freed."""
        for layer, saved in zip(self.layers, snap.layers):
            layer.forget(saved)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)


def export_snapshots(snapshots: list[Snapshot]) -> tuple[dict[str, torch.Tensor], list[list]]:
    """Snapshots of one path (each a prefix of the deepest, which comes last) as named tensors and the plain
    values beside them: per snapshot [position, per layer: a length (append-only layers) or the saved tuple
    with None where a tensor was]. An append-only layer's positions are written once, from the deepest."""
    tensors, plain = {}, []
    for i, saved in enumerate(snapshots[-1].layers):
        if isinstance(saved, Span):
            segments = [(s, n) for s, n in (*saved.base, (saved.store, saved.length - saved.offset)) if n]
            for j in range(len(saved.store.buffers)):
                tensors[f"layer{i}.{j}"] = torch.cat([s.buffers[j].narrow(s.dim, 0, n) for s, n in segments],
                                                     dim=saved.store.dim)
    for k, snap in enumerate(snapshots):
        values: list = [snap.position]
        for i, saved in enumerate(snap.layers):
            if isinstance(saved, Span):
                values.append(saved.length)
                continue
            values.append([None if isinstance(x, torch.Tensor) else x for x in saved])
            tensors.update((f"snap{k}.layer{i}.{j}", x) for j, x in enumerate(saved) if isinstance(x, torch.Tensor))
        plain.append(values)
    return tensors, plain


def import_snapshots(cache: Cache, tensors: dict[str, torch.Tensor], plain: list[list]) -> list[Snapshot]:
    """The snapshots `export_snapshots` wrote, for a cache shaped as `cache`: the append-only layers share
    one new store each, the others get their copies back."""
    stores = {}
    for i, layer in enumerate(cache.layers):
        if isinstance(layer, AppendCache):
            stores[i] = Store([tensors[f"layer{i}.{j}"].to(b.dtype).clone()
                               for j, b in enumerate(layer.store.buffers)], layer.store.dim)
    snapshots = []
    for k, (position, *layers) in enumerate(plain):
        saved = []
        for i, value in enumerate(layers):
            if i in stores:
                stores[i].pin(value)
                saved.append(Span((), stores[i], 0, value))
            else:
                saved.append(tuple(tensors[f"snap{k}.layer{i}.{j}"] if x is None else x for j, x in enumerate(value)))
        snapshots.append(Snapshot(position, saved))
    return snapshots


def held_bytes(cache: Cache, snapshots: list[Snapshot]) -> int:
    """Memory that `cache` and `snapshots` keep alive: each shared store once, plus every snapshot's copies."""
    stores = {id(store): store for layer in cache.layers if isinstance(layer, AppendCache)
              for store in (layer.store, *(s for s, _ in layer.base))}
    for snap in snapshots:
        stores.update((id(store), store) for store in snap.stores())
    return sum(store.nbytes() for store in stores.values()) + sum(snap.copied_bytes for snap in snapshots)


def _resized(x: torch.Tensor, size: int, dim: int, keep: int) -> torch.Tensor:
    """A new buffer of `size` along `dim` holding x's first `keep` positions."""
    shape = list(x.shape)
    shape[dim] = size
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    out.narrow(dim, 0, keep).copy_(x.narrow(dim, 0, keep))
    return out
