"""A training run on a lent GPU machine (issue 20): what travels there, and what comes back.

The device call sends the working tree (64 MiB at most: code, tokenizer, the shipped model) plus the
folders it is told to carry, and returns at most 8 files of 16 MiB. So:
- here, `rustle gpu-pack` writes the corpus's train and validation shards xz-compressed into
  `gpu/` (~12x smaller than the JSONL text; the folder is git-ignored and named in the call's `carry`),
  with the wheels of what packing needs and that machine lacks (tree-sitter: the anonymised crates);
- there, `data/gpu/run.sh RECIPE` unpacks them, trains (the recipe says `device = "cuda"`), ships the
  run (bf16 weights, config, tokenizer, record) and writes it to $OUT as a tar in parts under 16 MiB;
- here again, `rustle gpu-receive PARTS… --to DIR` joins and unpacks the parts into a model folder.
"""
from __future__ import annotations

import argparse
import io
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

from ..corpus.shards import shard_files
from .config import TrainConfig
from .ship import ship

PART_BYTES = 15 << 20    # a file the device call returns is 16 MiB at most
SPLITS = ("train", "validation")
WHEELS = ("tree-sitter", "tree-sitter-rust")   # the device's Python (3.12, x86-64) has the rest
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def pack(corpus: Path, out: Path) -> int:
    """The splits' shards of `corpus`, xz-compressed into `out`/shards; the bytes written."""
    (out / "shards").mkdir(parents=True, exist_ok=True)
    total = 0
    for split in SPLITS:
        for shard in shard_files(corpus, split):
            target = out / "shards" / f"{shard.name}.xz"
            with shard.open("rb") as src, lzma.open(target, "wb", preset=6) as dst:
                shutil.copyfileobj(src, dst)
            total += target.stat().st_size
    return total


def download_wheels(out: Path) -> None:
    """The WHEELS, at the versions installed here, built for the device's Python, into `out`/wheels."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out / "wheels"),
                    *(f"{name}=={version(name)}" for name in WHEELS)], check=True)


def unpack(folder: Path, corpus: Path) -> None:
    """`pack`'s shards back into `corpus`/shards."""
    (corpus / "shards").mkdir(parents=True, exist_ok=True)
    for packed in sorted((folder / "shards").glob("*.jsonl.xz")):
        with lzma.open(packed, "rb") as src, (corpus / "shards" / packed.name.removesuffix(".xz")).open("wb") as dst:
            shutil.copyfileobj(src, dst)


def export(recipe: Path, out: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Ship the recipe's run and write it to `out` as `run.tar.000`, `.001`… of at most `part_bytes` each."""
    config = TrainConfig.from_toml(recipe)
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        ship(config.out, model, recipe)
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(model, arcname="model")
    data, parts = buffer.getvalue(), []
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(data), part_bytes):
        parts.append(out / f"run.tar.{i // part_bytes:03d}")
        parts[-1].write_bytes(data[i:i + part_bytes])
    return parts


def receive(parts: list[Path], dest: Path) -> Path:
    """Join `export`'s parts (in name order) and unpack the model folder into `dest`."""
    data = b"".join(p.read_bytes() for p in sorted(parts))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "model"


def main(argv: list[str] | None = None) -> None:
    """The device side (data/gpu/run.sh): `unpack FOLDER CORPUS` and `export RECIPE OUT`."""
    parser = argparse.ArgumentParser(prog="python -m assistant.lab.train.gpu")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("unpack")
    p.add_argument("folder", type=Path)
    p.add_argument("corpus", type=Path)
    p = commands.add_parser("export")
    p.add_argument("recipe", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--part-bytes", type=int, default=PART_BYTES)
    args = parser.parse_args(argv)
    if args.command == "unpack":
        unpack(args.folder, args.corpus)
    else:
        for part in export(args.recipe, args.out, args.part_bytes):
            print(part, part.stat().st_size)


if __name__ == "__main__":
    main()
