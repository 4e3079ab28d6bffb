"""Per-layer decode state, and the whole model's cache with cheap snapshot/restore at a token position.

- KVCache (full) and LatentCache (lql) only ever append: a snapshot is just a length.
- RingCache (swa) holds the last W positions; GDNState (gdn) a conv tail and an fp32 matrix per head:
  their snapshots are small copies, independent of the context length.
Restoring a snapshot rewinds to its position and invalidates snapshots taken later (their positions
will be overwritten), as a prefix tree of checkpoints would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class KVCache:
    """Keys and values of every position: [B, H, capacity, D], grown by doubling."""

    def __init__(self, batch: int, heads: int, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.k = torch.empty(batch, heads, 256, dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            self.k, self.v = (_grow(x, end, dim=2) for x in (self.k, self.v))
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def snapshot(self) -> int:
        return self.length

    def restore(self, length: int) -> None:
        self.length = length

    def nbytes(self) -> int:
        return 2 * self.k[:, :, :self.length].numel() * self.k.element_size()


class LatentCache:
    """The lql latent of every position: [B, capacity, d]."""

    def __init__(self, batch: int, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.z = torch.empty(batch, 256, dim, dtype=dtype, device=device)
        self.length = 0

    def append(self, z: torch.Tensor) -> torch.Tensor:
        end = self.length + z.shape[1]
        if end > self.z.shape[1]:
            self.z = _grow(self.z, end, dim=1)
        self.z[:, self.length:end] = z
        self.length = end
        return self.z[:, :end]

    def snapshot(self) -> int:
        return self.length

    def restore(self, length: int) -> None:
        self.length = length

    def nbytes(self) -> int:
        return self.z[:, :self.length].numel() * self.z.element_size()


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

    def nbytes(self) -> int:
        return self.state.numel() * 4 + self.conv.numel() * self.conv.element_size()


LayerCache = KVCache | LatentCache | RingCache | GDNState


@dataclass
class Snapshot:
    position: int
    layers: list
    valid: bool = True


@dataclass
class Cache:
    """The whole model's decode state at `position` tokens."""
    layers: list[LayerCache]
    position: int = 0
    _live: list[Snapshot] = field(default_factory=list, repr=False)

    def snapshot(self) -> Snapshot:
        snap = Snapshot(self.position, [layer.snapshot() for layer in self.layers])
        self._live.append(snap)
        return snap

    def restore(self, snap: Snapshot) -> None:
        if not snap.valid:
            raise ValueError("this snapshot was overwritten: restoring an earlier one discards later ones")
        for layer, saved in zip(self.layers, snap.layers):
            layer.restore(saved)
        self.position = snap.position
        for other in self._live:
            if other.position > snap.position:
                other.valid = False
        self._live = [s for s in self._live if s.valid]

    def forget(self, snap: Snapshot) -> None:
        """Drop a snapshot the caller no longer needs (its copies are freed)."""
        snap.valid = False
        self._live = [s for s in self._live if s is not snap]

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)


def _grow(x: torch.Tensor, needed: int, dim: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[dim] = max(needed, 2 * shape[dim])
    bigger = torch.empty(shape, dtype=x.dtype, device=x.device)
    bigger.narrow(dim, 0, x.shape[dim]).copy_(x)
    return bigger
