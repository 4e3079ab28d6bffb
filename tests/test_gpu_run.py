"""A run on a lent GPU machine, played on the CPU (device = "cpu" in a tiny recipe): what travels there (corpus shards
or packed token files), data/gpu/run.sh's kernel check and time budget, and the parts that come back."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.lab.train.config import TrainConfig
from assistant.lab.train.loop import BUDGET_STEPS, REWARM_FRACTION, fit_budget, lr_at, train
from model.io import load_model

from conftest import ROOT
from test_train import recipe


def run_sh(recipe_path: Path, out: Path, gpu: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "data" / "gpu" / "run.sh"), str(recipe_path), str(out)],
                          cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "GPU_DIR": str(gpu), **env})


def test_a_gpu_run_travels_packed_trains_and_comes_back_in_parts(corpus, tmp_path, rustle):
    rustle("gpu-pack", "--corpus", str(corpus), "--out", str(tmp_path / "gpu"), "--no-wheels")
    assert sorted(p.name for p in (tmp_path / "gpu" / "shards").iterdir()) == [
        f"{p.name}.xz" for p in sorted((corpus / "shards").glob("*.jsonl")) if not p.name.startswith("test")]
    gpu_recipe = recipe(tmp_path / "device", tmp_path / "device" / "corpus", device="cpu", total_tokens=1024,
                        bf16=False, tokenizer=str(ROOT / "tokenizer" / "rustle-bpe-16k"))
    done = run_sh(gpu_recipe, tmp_path / "out", tmp_path / "gpu", tmp_path, PART_BYTES="400000")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parts = sorted((tmp_path / "out").glob("run.tar.*"))
    assert len(parts) > 1 and all(p.stat().st_size <= 400_000 for p in parts)
    rustle("gpu-receive", *map(str, parts), "--to", str(tmp_path / "received"))
    model = tmp_path / "received" / "model"
    assert load_model(model).config.d_model == 32 and (model / "train.log").is_file()
    assert json.loads((model / "metadata.json").read_text())["run_tokens"] == 1024


def test_packed_tokens_travel_instead_of_the_corpus_and_the_kernel_check_runs_first(corpus, tmp_path, rustle):
    here = recipe(tmp_path / "here", corpus, total_tokens=1024, bf16=False, device="cuda")   # a GPU recipe
    packed = rustle("train", "--config", str(here), "--pack-only")   # packs its token files here, trains nothing
    tokens = tmp_path / "here" / "run" / "tokens"
    assert f"train: {tokens / 'train.bin'}" in " ".join(packed.stdout.split())
    assert sorted(p.name for p in (tmp_path / "here" / "run").iterdir()) == ["tokens"]
    rustle("gpu-pack", "--tokens", str(tokens), "--out", str(tmp_path / "gpu"), "--no-wheels")
    assert sorted(p.name for p in (tmp_path / "gpu" / "tokens").iterdir()) == [
        "train.bin.xz", "train.json.xz", "validation.bin.xz", "validation.json.xz"]
    # there, the corpus does not exist: training must find its tokens packed already
    there = recipe(tmp_path / "device", tmp_path / "nowhere", device="cpu", total_tokens=1024, bf16=False,
                   tokenizer=str(ROOT / "tokenizer" / "rustle-bpe-16k"))
    done = run_sh(there, tmp_path / "out", tmp_path / "gpu", tmp_path, TRAIN_SECONDS="600")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "device" / "run" / "tokens" / "train.bin").read_bytes() == (tokens / "train.bin").read_bytes()
    check = (tmp_path / "out" / "check.log").read_text()
    assert "triton: loss" in check and "pytorch: loss" in check and "largest relative difference 0.00e+00" in check
    assert "block 2 (lql): output differs by 0.00e+00" in check
    assert " ms a step" in check and "Triton's step takes" in check    # the faster path trains, where both agree
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["tokens"] == 1024 and "val_loss" in rows[-1]
    assert sorted(p.name for p in (tmp_path / "out").glob("run.tar.*")) == ["run.tar.000"]


def test_a_token_pack_without_token_files_says_what_is_missing(tmp_path, rustle):
    proc = rustle("gpu-pack", "--tokens", str(tmp_path / "run" / "tokens"), "--out", str(tmp_path / "gpu"),
                  check=False)
    assert proc.returncode == 2 and "train.bin" in proc.stdout and "rustle train" in proc.stdout


def test_a_time_budget_cuts_the_run_to_whole_batches_that_fit():
    config = TrainConfig(out=Path("run"), total_tokens=1_000_000, batch_tokens=512)
    assert fit_budget(config, 1024, tokens_per_s=1000.0, seconds_left=10.0).total_tokens == 1024 + 17 * 512
    assert fit_budget(config, 1024, tokens_per_s=1e9, seconds_left=10.0).total_tokens == 1_000_000  # never longer
    assert fit_budget(config, 1024, tokens_per_s=1000.0, seconds_left=-5.0).total_tokens == 1024 + 512


def test_a_weights_only_start_cut_by_a_time_budget_warms_up_over_a_share_of_the_cut_run():
    recipe_total = 40 * 2 ** 20
    config = TrainConfig(out=Path("run"), init_from=Path("start"), total_tokens=recipe_total, lr=1e-3, min_lr=1e-4,
                         batch_tokens=2 ** 14)
    cut = fit_budget(config, 13 * 2 ** 14, tokens_per_s=1000.0, seconds_left=3000.0)
    assert cut.total_tokens < recipe_total / 10
    warm = int(REWARM_FRACTION * cut.total_tokens)
    assert lr_at(cut, warm - 1) == cut.lr                      # the peak at 2% of the cut run, not of the recipe's
    assert lr_at(cut, warm // 2) < cut.lr and lr_at(cut, cut.total_tokens) == cut.min_lr
    assert lr_at(replace(cut, init_from=None, warmup_tokens=100), 99) == cut.lr      # a fresh start: the recipe's


def test_a_run_with_a_time_budget_ends_where_the_budget_cut_it_and_a_resume_keeps_the_cut(corpus, tmp_path):
    config = replace(TrainConfig.from_toml(recipe(tmp_path, corpus, bf16=False)), total_tokens=10 ** 9,
                     eval_every_tokens=10 ** 9, checkpoint_every_seconds=300.0, max_seconds=8.0)
    state, _ = train(config)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    cut = rows[BUDGET_STEPS[1] - 1]["total_tokens"]
    assert all(r["total_tokens"] == 10 ** 9 for r in rows[:BUDGET_STEPS[1] - 1])
    assert cut < 10 ** 9 and all(r["total_tokens"] == cut for r in rows[BUDGET_STEPS[1] - 1:])
    assert state.tokens == rows[-1]["tokens"] == cut and "val_loss" in rows[-1]
    # resumed with the same recipe, the run keeps the cut (its learning-rate schedule) instead of the recipe's total
    resumed, _ = train(config, resume=True, max_steps=rows[-1]["step"] + 2)
    assert resumed.tokens == cut and len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == len(rows)


def test_token_files_too_large_to_travel_keep_whole_blocks_spread_over_them(tmp_path):
    import lzma

    import numpy as np

    from assistant.lab.train.gpu import pack_tokens, spread, unpack

    tokens, blocks = tmp_path / "run" / "tokens", 64
    tokens.mkdir(parents=True)
    train = np.random.default_rng(0).integers(0, 16384, blocks * 1024, dtype=np.uint16)   # incompressible-ish
    train.tofile(tokens / "train.bin")
    np.arange(1000, dtype=np.uint16).tofile(tokens / "validation.bin")
    for split, count in (("train", len(train)), ("validation", 1000)):
        (tokens / f"{split}.json").write_text(json.dumps({"tokens": count, "split": split, "seed": 7}) + "\n")
    whole, kept, count = pack_tokens(tokens, tmp_path / "all", max_bytes=None, block_tokens=1024)
    assert kept == count == len(train)
    size, kept, count = pack_tokens(tokens, tmp_path / "gpu", max_bytes=whole // 2, block_tokens=1024)
    assert size == sum(p.stat().st_size for p in (tmp_path / "gpu" / "tokens").iterdir()) <= whole // 2
    assert count == len(train) and kept % 1024 == 0 and blocks // 4 < kept // 1024 < blocks // 2
    unpack(tmp_path / "gpu", tmp_path / "corpus", tmp_path / "there")
    cut = np.fromfile(tmp_path / "there" / "train.bin", dtype=np.uint16).reshape(-1, 1024)
    chosen = [int(np.flatnonzero((train.reshape(-1, 1024) == row).all(1))[0]) for row in cut]
    assert chosen == sorted(set(chosen)) and chosen[0] == 0 and chosen[-1] == blocks - 1   # first to last
    record = json.loads((tmp_path / "there" / "train.json").read_text())
    assert record == {"tokens": kept, "split": "train", "seed": 7, "packed_from": len(train)}
    assert lzma.decompress((tmp_path / "gpu" / "tokens" / "validation.bin.xz").read_bytes()) == \
        (tokens / "validation.bin").read_bytes()
    assert spread(10, 0.3) == [0, 5, 9] and spread(4, 1.0) == [0, 1, 2, 3] and spread(9, 0.01) == [0]
    with pytest.raises(ValueError, match="not one block"):
        pack_tokens(tokens, tmp_path / "none", max_bytes=1000, block_tokens=1024)


def test_what_travels_is_the_tracked_and_the_untracked_files_git_does_not_ignore(tmp_path):
    from assistant.lab.train.gpu import travelling_bytes

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("/gpu/\n")                   # 6 bytes
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tracked.rs").write_text("x" * 100)
    git("add", ".gitignore", "src/tracked.rs")
    (tmp_path / "src" / "new.rs").write_text("y" * 30)                 # untracked, not ignored: travels
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "tokens.xz").write_bytes(b"z" * 1000)          # ignored: only `carry` sends it
    assert travelling_bytes(tmp_path / "src") == 6 + 100 + 30
