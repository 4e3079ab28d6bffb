"""Per-file quality filters (size, encoding, generated code) and near-duplicate detection with MinHash."""
from __future__ import annotations

import hashlib
import os
import re
import zlib
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH

# Markers of generated code, looked for only in plain (non-doc) comments near the top of a file, where
# tools put them: "do not edit" in a string of a code generator's own source, or "auto-generated help"
# in a doc comment, is not a marker.
GENERATED_MARKERS = re.compile(
    r"@generated|automatically generated|auto-?generated (?:by|from|file|code)|do not (?:edit|modify)", re.IGNORECASE)
HEAD_BYTES = 2048
SHINGLE = 5  # words per shingle, as in The Stack's near-deduplication
NUM_PERM = 128
SCHEME = "affine32"  # datasketch 2: 32-bit values, stored as they are
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class FilterConfig:
    max_bytes: int = 1_000_000
    near_duplicate_threshold: float = 0.85


@dataclass(frozen=True)
class Examined:
    """What the filters found in one file. `reason` is None for a file worth keeping."""
    bytes: int
    sha256: str
    reason: str | None
    signature: bytes | None  # MinHash values as uint32, for files that pass the per-file filters


def examine(abspath: str, config: FilterConfig) -> Examined:
    """Read one file and apply every per-file filter; never raises on bad input."""
    try:
        with open(abspath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > config.max_bytes:
                return Examined(size, "", "too_large", None)
            data = f.read()
    except OSError:
        return Examined(0, "", "unreadable", None)
    digest = hashlib.sha256(data).hexdigest()
    if not data.strip():
        return Examined(len(data), digest, "empty", None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Examined(len(data), digest, "non_utf8", None)
    if is_generated(text[:HEAD_BYTES]):
        return Examined(len(data), digest, "generated", None)
    return Examined(len(data), digest, None, minhash(text).astype(np.uint32).tobytes())


def is_generated(head: str) -> bool:
    """A generated-code marker in a plain comment line of the file's head."""
    for line in head.splitlines():
        line = line.lstrip()
        comment = (line.startswith("//") and not line.startswith(("///", "//!"))) or line.startswith(("/*", "*"))
        if comment and GENERATED_MARKERS.search(line):
            return True
    return False


def minhash(text: str) -> np.ndarray:
    """MinHash values of a file's word 5-gram shingles."""
    words = WORD.findall(text)
    shingles = [" ".join(words[i:i + SHINGLE]).encode() for i in range(max(1, len(words) - SHINGLE + 1))]
    m = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=zlib.crc32, scheme=SCHEME)
    m.update_batch(shingles)
    return m.hashvalues


class NearDuplicates:
    """An LSH index over kept files' signatures; LSH candidates are confirmed by estimated Jaccard."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.kept: dict[str, MinHash] = {}

    def seen_or_add(self, key: str, signature: bytes) -> bool:
        """True when a kept file is at least `threshold` similar; otherwise remember this one."""
        m = MinHash(num_perm=NUM_PERM, seed=1, hashvalues=np.frombuffer(signature, dtype=np.uint32), scheme=SCHEME)
        if any(self.kept[other].jaccard(m) >= self.threshold for other in self.lsh.query(m)):
            return True
        self.lsh.insert(key, m)
        self.kept[key] = m
        return False
