"""ModelConfig: every size and the layer pattern; saved as config.json beside the weights."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

KINDS = ("full", "swa", "gdn", "lql")
GLOBAL_KINDS = ("full", "lql")
# The largest value each size may take: a config.json beyond these is a mistake (or hostile), not a model this
# project trains, and is refused before anything is allocated.
BOUNDS = {"vocab_size": 1 << 21, "d_model": 1 << 15, "n_heads": 1024, "n_kv_heads": 1024, "head_dim": 1024,
          "mlp_hidden": 1 << 18, "window": 1 << 24, "gdn_heads": 1024, "gdn_head_dim": 1024, "conv_size": 64,
          "chunk_size": 4096, "lql_dim": 1 << 14, "lql_heads": 1024, "lql_recent": 1 << 24}
MAX_LAYERS = 1024
MAX_KEY_DIM = 4096    # numbers a memory key may have (the constant reader's memory_dim, a fitted reader's)


def default_pattern() -> tuple[str, ...]:
    # 3 cheap : 1 global (Qwen3-Next, Kimi Linear), no global layer first, linear and local layers alternating.
    return ("gdn", "swa", "gdn", "lql") * 3


@dataclass
class ModelConfig:
    vocab_size: int = 16384
    d_model: int = 384
    n_heads: int = 6            # query heads of full and swa layers
    n_kv_heads: int = 2         # GQA
    head_dim: int = 64
    mlp_hidden: int = 1024      # SwiGLU
    layer_pattern: tuple[str, ...] = field(default_factory=default_pattern)
    window: int = 512           # swa
    gdn_heads: int = 6
    gdn_head_dim: int = 64
    conv_size: int = 4          # gdn's short causal convolution
    chunk_size: int = 64        # gdn's chunkwise form
    lql_dim: int = 64           # lql latent width d (the cache holds d numbers per token)
    lql_heads: int = 2
    lql_recent: int = 2048      # an lql query past lql_recent + 64 * lql_blocks keys sees its recent keys and the
    lql_blocks: int = 32        # blocks of 64 older ones most promising to it (kernels/attention/select.py); 0: all
    lql_log_base: int = 0       # lql queries at position p past this are scaled by ln(p + 1) / ln(base): a softmax
                                # over more keys stays as sharp (0: off)
    lql_shift: bool = False     # lql keys and values are [z_t, z_t-1]: a query finds the position after a match (an
                                # induction head's key) without z holding both (the cache holds 2d numbers per token)
    lql_token_key: bool = False  # with lql_shift, keys and values are [z_t, e_t-1, e_t], e a projection of the
                                 # token's embedding (the cache holds 3d numbers per token)
    global_rope: bool = False   # full and lql layers go without positions (NoPE) unless set
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    qkv_bias: bool = False      # full/swa projections with bias (Qwen2 checkpoints)
    memory_weight: float = 0.0  # inference: the weight of the vote of the cache's own hidden states (model/memory.py;
    memory_k: int = 32          # 0: off) among its `memory_k` nearest keys, each weighted by
    memory_scale: float = 16.0  # softmax(memory_scale x cosine similarity) of keys projected to memory_dim numbers
    memory_dim: int = 64

    def __post_init__(self) -> None:
        for name, top in BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ValueError(f"{name} = {value!r}: expected a whole number from 1 to {top:,}")
        blocks = self.lql_blocks
        if not isinstance(blocks, int) or isinstance(blocks, bool) or not 0 <= blocks <= 1 << 20:
            raise ValueError(f"lql_blocks = {self.lql_blocks!r}: expected a whole number from 0 to {1 << 20:,}")
        base = self.lql_log_base
        if not isinstance(base, int) or isinstance(base, bool) or base == 1 or not 0 <= base <= 1 << 30:
            raise ValueError(f"lql_log_base = {base!r}: expected 0 (off) or a whole number of positions from 2")
        if not isinstance(self.lql_shift, bool):
            raise ValueError(f"lql_shift = {self.lql_shift!r}: expected true or false")
        if not isinstance(self.lql_token_key, bool) or (self.lql_token_key and not self.lql_shift):
            raise ValueError(f"lql_token_key = {self.lql_token_key!r}: expected true (with lql_shift) or false")
        if not (isinstance(self.memory_weight, (int, float)) and 0 <= self.memory_weight < 1
                and isinstance(self.memory_k, int) and 1 <= self.memory_k <= 4096
                and isinstance(self.memory_scale, (int, float)) and 0 < self.memory_scale <= 1e4
                and isinstance(self.memory_dim, int) and 1 <= self.memory_dim <= MAX_KEY_DIM):
            raise ValueError(f"memory_weight {self.memory_weight!r} (from 0 to below 1), memory_k {self.memory_k!r} "
                             f"(1 to 4,096), memory_scale {self.memory_scale!r} (positive) and memory_dim "
                             f"{self.memory_dim!r} (1 to {MAX_KEY_DIM:,}) are out of range")
        if not isinstance(self.layer_pattern, (list, tuple)) or not 1 <= len(self.layer_pattern) <= MAX_LAYERS:
            raise ValueError(f"layer_pattern: expected a list of 1 to {MAX_LAYERS:,} layer kinds")
        if not all(isinstance(x, (int, float)) and x > 0 for x in (self.rope_theta, self.norm_eps)):
            raise ValueError("rope_theta and norm_eps must be positive numbers")
        self.layer_pattern = tuple(self.layer_pattern)
        unknown = [k for k in self.layer_pattern if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown layer kinds {unknown}: use {KINDS}")
        if self.n_heads % self.n_kv_heads or self.lql_dim % self.lql_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads, lql_dim of lql_heads")

    @property
    def lql_width(self) -> int:
        """The numbers an lql key (and value, and cache row) holds."""
        return self.lql_dim * (3 if self.lql_token_key else 2 if self.lql_shift else 1)

    @property
    def n_layers(self) -> int:
        return len(self.layer_pattern)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        """The config in `path`; ValueError (with the path) for one that is not a JSON object of sane sizes."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as err:                 # json's errors are ValueErrors too
            raise ValueError(f"{path}: {err}") from err
