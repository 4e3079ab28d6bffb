"""Reading the corpus's JSONL text shards."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def shard_files(corpus: Path, split: str) -> list[Path]:
    """The split's shards, in order; an empty list when the split has no crates."""
    if not (corpus / "shards").is_dir():
        raise FileNotFoundError(f"no shards in {corpus}: run `rustle corpus build --out {corpus}` first")
    return sorted((corpus / "shards").glob(f"{split}-*.jsonl"))


def records(corpus: Path, split: str) -> Iterator[dict]:
    """Each file's record (source, crate, version, license, path, text), a crate's files together."""
    for shard in shard_files(corpus, split):
        with shard.open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def texts(corpus: Path, split: str, max_bytes: int | None = None) -> Iterator[str]:
    """File texts of a split; with `max_bytes`, every k-th file so that the sample spans all crates."""
    stride = 1
    if max_bytes is not None:
        total = sum(len(r["text"].encode()) for r in records(corpus, split))
        stride = max(1, -(-total // max_bytes))
    for i, record in enumerate(records(corpus, split)):
        if i % stride == 0:
            yield record["text"]
