"""The repository part's model state on disk (and the open document's lines after it), so that reopening a
workspace seen before answers in seconds instead of after a full prefill: one safetensors file per workspace,
the snapshots along the part keyed by their prefix digests (so a part that changed since reuses what it still
starts with), and the model it was computed with (another model's state is never read).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model.cache import export_snapshots, import_snapshots
from model.io import MEMORY, WEIGHTS

from ..index.workspace import cache_dir
from .state import StateCache

log = logging.getLogger("rustle.engine")
KEPT = 16       # snapshots saved along a part, evenly spread, besides its end (each ~1 MB for the shipped model)


def model_key(model_dir: Path, dtype: str) -> str:
    """The weights', memory reader's, config's (e.g. its lql selection), tokenizer's and serving dtype's digest: a
    state is only valid for the exact model that computed it."""
    hasher = hashlib.blake2b(dtype.encode(), digest_size=16)
    for name in (WEIGHTS, MEMORY, "config.json", "tokenizer.json"):
        path = model_dir / name
        if path.is_file():
            hasher.update(path.read_bytes())
    return hasher.hexdigest()


def state_file(root: Path) -> Path:
    key = hashlib.blake2b(str(root.resolve()).encode(), digest_size=8).hexdigest()
    return cache_dir() / "states" / f"{root.resolve().name}-{key}.safetensors"


class StateFiles:
    def __init__(self, model: str) -> None:
        self.model = model

    def save(self, root: Path, state: StateCache, ids: list[int], boundaries: list[int],
             keep: set[int] = frozenset()) -> None:
        """Write the snapshots along `ids`: KEPT of them evenly spread, the end, and those at `keep` (the
        repository part's end, when `ids` go on into a document). The caller holds the engine lock."""
        path = state.path(ids, boundaries)
        if not path:
            return
        keys = list(path)
        step = max(1, (len(keys) - 1) // KEPT + 1)
        keys = sorted(set(keys[:-1][::step]) | {keys[-1]} | {k for k in keys if k[0] in keep})
        tensors, plain = export_snapshots([path[k] for k in keys])
        tensors = {name: t.cpu() for name, t in tensors.items()}
        out = state_file(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.model, "plain": json.dumps(plain), "keys": json.dumps([[p, d.hex()] for p, d in keys])}
        save_file(tensors, str(out.with_suffix(".tmp")), metadata=meta)
        out.with_suffix(".tmp").replace(out)      # readers never see half a file

    def load(self, root: Path, state: StateCache) -> int:
        """Adopt the snapshots saved for `root` by this model; how many (0 when none or unusable)."""
        path = state_file(root)
        if not path.is_file():
            return 0
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata()
            if meta.get("model") != self.model:
                return 0
            device = str(state.model.embed.weight.device)
            snaps = import_snapshots(state.cache, load_file(str(path), device=device), json.loads(meta["plain"]))
            keys = [(p, bytes.fromhex(d)) for p, d in json.loads(meta["keys"])]
        except Exception as err:  # a damaged file costs a prefill, nothing more
            log.warning("ignoring the saved state %s: %s", path, err)
            return 0
        state.adopt(dict(zip(keys, snaps)))
        return len(snaps)
