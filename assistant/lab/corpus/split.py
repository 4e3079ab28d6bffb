"""Train/validation/test assignment by crate: a seeded hash, so a crate never straddles two splits."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitConfig:
    seed: int = 1234
    validation: float = 0.05
    test: float = 0.05
    unit: str = "crate"  # "crate" (pre-training: no crate straddles splits) or "file" (fine-tuning on one repo)


def draw(key: str, config: SplitConfig) -> float:
    """A crate's (or file's) seeded hash as a number in [0, 1): where it falls decides its split."""
    digest = hashlib.sha256(f"{config.seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, config: SplitConfig) -> str:
    """The split of a crate (or of a file, keyed crate/path). Stable when others are added."""
    u = draw(key, config)
    if u < config.test:
        return "test"
    if u < config.test + config.validation:
        return "validation"
    return "train"
