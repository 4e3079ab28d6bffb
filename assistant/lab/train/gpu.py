"""A training run on a lent GPU machine (issue 20): what travels there, and what comes back.

The device call sends the working tree (64 MiB at most: code, tokenizer, the shipped model) plus the
folders it is told to carry, and returns at most 8 files of 16 MiB. So:
- here, `rustle gpu-pack` writes the corpus's train and validation shards xz-compressed into
  `gpu/` (~12x smaller than the JSONL text; the folder is git-ignored and named in the call's `carry`),
  or, with `--tokens RUN/tokens`, a run's packed token files (~4x smaller compressed), so that nothing is
  packed there: packing the whole split takes minutes of one core, a lent machine's scarcest time; and the
  wheels of what that machine lacks (tree-sitter: packing's modules import it);
- there, `data/gpu/run.sh RECIPE` unpacks them, checks the Triton kernels against PyTorch's paths (`check`),
  trains (the recipe says `device = "cuda"`), ships the run (bf16 weights, config, tokenizer, record) and
  writes it to $OUT as a tar in parts under 16 MiB;
- here again, `rustle gpu-receive PARTS… --to DIR` joins and unpacks the parts into a model folder.
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import math
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
DEVICE_TREE_BYTES = 64 << 20   # a device call sends this much at most: the working tree with what it carries
TREE_MARGIN = 2 << 20    # the tree may grow a little (commits) between the pack and the call
BLOCK_TOKENS = 1 << 20   # a cut training file keeps whole blocks of this many tokens
TOKEN_BYTES = 2          # uint16
RECORD_BYTES = 4096      # room for the training file's record
SPLITS = ("train", "validation")
CHECK_TOLERANCE = 0.05   # relative: loss and gradient norm, Triton kernels against PyTorch's paths, bf16 autocast
WHEELS = ("tree-sitter", "tree-sitter-rust")   # the device's Python (3.12, x86-64) has the rest
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def _compress(files: list[Path], folder: Path) -> int:
    """Each file xz-compressed into `folder` as NAME.xz; the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in files:
        target = folder / f"{path.name}.xz"
        with path.open("rb") as src, lzma.open(target, "wb", preset=6) as dst:
            shutil.copyfileobj(src, dst)
        total += target.stat().st_size
    return total


def _decompress(folder: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for packed in sorted(folder.glob("*.xz")):
        with lzma.open(packed, "rb") as src, (dest / packed.name.removesuffix(".xz")).open("wb") as dst:
            shutil.copyfileobj(src, dst)


def pack(corpus: Path, out: Path) -> int:
    """The splits' shards of `corpus`, xz-compressed into `out`/shards; the bytes written."""
    return _compress([shard for split in SPLITS for shard in shard_files(corpus, split)], out / "shards")


def pack_tokens(tokens: Path, out: Path, max_bytes: int | None = None,
                block_tokens: int = BLOCK_TOKENS) -> tuple[int, int, int]:
    """A run's token files (`tokens`/SPLIT.bin and their records), xz-compressed into `out`/tokens, in `max_bytes`
    at most: where all of the training tokens do not fit, whole blocks of them spread evenly over the file (a
    training window seldom spans two; its record says how many were kept). (bytes written, training tokens kept,
    training tokens there were)."""
    files = [tokens / f"{split}{suffix}" for split in SPLITS for suffix in (".bin", ".json")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no token files {', '.join(missing)}: `rustle train` writes them on first use")
    folder = out / "tokens"
    size = _compress([tokens / "validation.bin", tokens / "validation.json", tokens / "train.bin"], folder)
    count = (tokens / "train.bin").stat().st_size // TOKEN_BYTES
    blocks, share, kept = -(-count // block_tokens), 1.0, count
    while max_bytes is not None and size + RECORD_BYTES > max_bytes:
        train_bytes = (folder / "train.bin.xz").stat().st_size
        share *= 0.97 * (max_bytes - RECORD_BYTES - (size - train_bytes)) / train_bytes
        if share * blocks < 1:
            raise ValueError(f"not one block of {block_tokens:,} training tokens fits in {max_bytes / 2**20:.1f} MiB")
        kept = _compress_blocks(tokens / "train.bin", folder / "train.bin.xz", spread(blocks, share), block_tokens)
        size += (folder / "train.bin.xz").stat().st_size - train_bytes
    record = json.loads((tokens / "train.json").read_text()) | {"tokens": kept, "packed_from": count}
    with lzma.open(folder / "train.json.xz", "wb", preset=6) as dst:
        dst.write((json.dumps(record) + "\n").encode())
    return size + (folder / "train.json.xz").stat().st_size, kept, count


def spread(blocks: int, share: float) -> list[int]:
    """`share` of `blocks` block numbers (one at least), evenly spread from the first to the last."""
    kept = max(1, min(blocks, math.floor(blocks * share)))
    return [math.floor(j * (blocks - 1) / max(kept - 1, 1) + 0.5) for j in range(kept)]


def _compress_blocks(path: Path, target: Path, kept: list[int], block_tokens: int) -> int:
    """The blocks `kept` of the token file `path`, one after another, xz-compressed into `target`; tokens written."""
    written = 0
    with path.open("rb") as src, lzma.open(target, "wb", preset=6) as dst:
        for block in kept:
            src.seek(block * block_tokens * TOKEN_BYTES)
            data = src.read(block_tokens * TOKEN_BYTES)
            dst.write(data)
            written += len(data) // TOKEN_BYTES
    return written


def travelling_bytes(inside: Path) -> int:
    """What a device call sends from the repository holding `inside` besides the folders it carries: its tracked
    files and the untracked ones git does not ignore."""
    def git(where: Path, *args: str) -> bytes:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, check=True).stdout

    root = Path(git(inside, "rev-parse", "--show-toplevel").decode().strip())
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")   # from the root: all of it
    paths = {root / name.decode() for name in listed.split(b"\0") if name}
    return sum(p.stat().st_size for p in paths if p.is_file())


def download_wheels(out: Path) -> None:
    """The WHEELS, at the versions installed here, built for the device's Python, into `out`/wheels."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out / "wheels"),
                    *(f"{name}=={version(name)}" for name in WHEELS)], check=True)


def unpack(folder: Path, corpus: Path, tokens: Path) -> None:
    """What `pack` and `pack_tokens` wrote into `folder`, back: shards into `corpus`/shards, tokens into `tokens`
    (the recipe's run folder's tokens/, where training finds them packed already)."""
    if (folder / "shards").is_dir():
        _decompress(folder / "shards", corpus / "shards")
    if (folder / "tokens").is_dir():
        _decompress(folder / "tokens", tokens)


def check(recipe: Path, batch_tokens: int = 16384) -> tuple[float, float]:
    """(the largest relative difference in loss and gradient norm, Triton's step time over PyTorch's) for the
    recipe's starting model on one batch of its training tokens, run with the Triton kernels and with PyTorch's
    paths (bf16 autocast, as training). Each path runs twice and its second step is timed (the first compiles);
    each block's output difference is printed, so that a disagreement names its layer."""
    import time

    import torch

    from kernels import compile as dispatch

    from .data import load_tokens, prepare_tokens
    from .loop import batch, starting_model

    config = TrainConfig.from_toml(recipe)
    torch.manual_seed(config.seed)
    model = starting_model(config)[0].to(config.device)
    seq_len = config.seq_len(0)
    tokens = prepare_tokens(config.out / "tokens", config.corpus, config.tokenizer, config.pack)["train"]
    x, y = (t.to(config.device) for t in batch(load_tokens(tokens), seq_len, max(1, batch_tokens // seq_len),
                                               config.seed, 0, 0))
    results, seconds, blocks = [], [], {}     # blocks: each block's output per path, to name the first that differs
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda _, __, out, i=i: blocks.__setitem__(
            (dispatch.TRITON, i), (out if torch.is_tensor(out) else out[0]).detach().float()))

    def step() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            loss = model.loss(x, y, compiled=False)
        loss.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        return float(loss.detach()), float(norm)

    for triton in (True, False):
        dispatch.TRITON = triton
        results.append(step())
        if x.is_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()                                  # float() on the loss and norm waits for the device
        seconds.append(time.perf_counter() - started)
        print(f"{'triton' if triton else 'pytorch'}: loss {results[-1][0]:.5f}, gradient norm {results[-1][1]:.5f}, "
              f"{seconds[-1] * 1000:.0f} ms a step")
    dispatch.TRITON = True
    for i, kind in enumerate(config.model.layer_pattern):
        a, b = blocks[(True, i)], blocks[(False, i)]
        print(f"block {i} ({kind}): output differs by {float((a - b).abs().max() / b.abs().max()):.2e} of its largest")
    difference = max(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(*results))
    return difference, seconds[0] / max(seconds[1], 1e-9)


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
    """The device side (data/gpu/run.sh): `unpack FOLDER CORPUS TOKENS`, `check RECIPE` (exit 1 where the Triton
    kernels disagree with PyTorch's paths, are slower, or the recipe compiles its blocks: train on PyTorch's then)
    and `export RECIPE OUT`."""
    parser = argparse.ArgumentParser(prog="python -m assistant.lab.train.gpu")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("unpack")
    p.add_argument("folder", type=Path)
    p.add_argument("corpus", type=Path)
    p.add_argument("tokens", type=Path)
    p = commands.add_parser("check")
    p.add_argument("recipe", type=Path)
    p = commands.add_parser("export")
    p.add_argument("recipe", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--part-bytes", type=int, default=PART_BYTES)
    args = parser.parse_args(argv)
    if args.command == "unpack":
        unpack(args.folder, args.corpus, args.tokens)
    elif args.command == "check":
        difference, slower = check(args.recipe)
        print(f"largest relative difference {difference:.2e} (tolerance {CHECK_TOLERANCE}); "
              f"Triton's step takes {slower:.2f}x PyTorch's, both eager")
        compiled = TrainConfig.from_toml(args.recipe).compile
        if compiled:   # the eager timing does not speak for compiled blocks, which fuse PyTorch's paths
            print("compiled blocks train on PyTorch's paths (stage 12: 381.6k tokens/s on an H200)")
        sys.exit(0 if difference <= CHECK_TOLERANCE and slower <= 1 and not compiled else 1)
    else:
        for part in export(args.recipe, args.out, args.part_bytes):
            print(part, part.stat().st_size)


if __name__ == "__main__":
    main()
