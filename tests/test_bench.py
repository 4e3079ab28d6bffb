"""The benchmark commands run end to end on tiny settings and print well-formed rows."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_model

from model.config import ModelConfig


def test_bench_model_prints_a_row_per_model_and_context(rustle, tmp_path):
    config = ModelConfig(vocab_size=256, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                         layer_pattern=("gdn", "swa", "gdn", "lql"), window=32, gdn_heads=2, gdn_head_dim=16,
                         chunk_size=16, lql_dim=16, lql_heads=1)
    config.save(tmp_path / "config.json")
    out = rustle("bench", "model", "--json", "--contexts", "64,600", "--config", str(tmp_path / "config.json"),
                 "--prefill-limit", "600", "--twin-prefill-limit", "64", "--threads", "1", "--dtype", "bf16").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["model"], r["context"]) for r in rows] == [("hybrid", 64), ("hybrid", 600), ("twin", 64), ("twin", 600)]
    hybrid, twin = rows[1], rows[3]
    assert hybrid["prefill_tokens_per_s"] > 0
    assert twin["prefill_tokens_per_s"] is None and "filled directly" in twin["note"]
    # twin: 4 layers x K and V x 1 head x 16 x bf16 per token; hybrid: a 16-wide latent + fixed window and state
    assert twin["cache_bytes"] == 600 * 4 * 2 * 16 * 2
    assert hybrid["cache_bytes_by_kind"]["lql"] == 600 * 16 * 2  # one lql layer
    assert hybrid["cache_bytes"] < twin["cache_bytes"]


def test_bench_kernels_prints_every_kernel_layer_and_shape(rustle):
    out = rustle("bench", "kernels", "--json", "--contexts", "300", "--steps", "1,4", "--repeats", "1",
                 "--threads", "1").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    kernels = {"torch merged (flash, split-K)", "torch sdpa, contiguous"}
    kernels |= {"segments.c"} if shutil.which("cc") else set()
    expected = {(k, layer, T) for k in kernels for layer in ("lql", "gqa") for T in (1, 4)}
    expected |= {("select.py", "lql", T) for T in (1, 4)}
    assert {(r["kernel"], r["layer"], r["rows"]) for r in rows} == expected
    assert all(r["context"] == 300 and r["ms"] > 0 and r["gflops"] > 0 for r in rows)


def test_the_gpu_half_of_bench_kernels_runs_under_the_interpreter():
    """`rustle bench kernels --device cuda` as a GPU runs it, here on CPU tensors (the GPU script's step 2)."""
    pytest.importorskip("triton")
    import time

    from assistant.lab.bench.kernels import measure_gpu

    def timer(run) -> float:
        started = time.perf_counter()
        run()
        return 1000 * (time.perf_counter() - started)

    rows = list(measure_gpu([32], device="cpu", dtype=torch.float32, timer=timer, ceiling=64))
    names = {r.kernel for r in rows}
    assert {"triton flash", "torch sdpa", "triton gdn chunk", "torch gdn chunk", "triton gdn step",
            "torch gdn step", "ceiling: matmul", "ceiling: copy"} <= names
    assert all(r.ms > 0 for r in rows)


def test_bench_recall_prints_every_pattern(rustle):
    out = rustle("bench", "recall", "--seconds", "0.5", "--json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["pattern"] for r in rows} >= {"swa only", "swa + full", "swa + lql"}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["steps"] >= 1 for r in rows)


def test_compare_variants_share_the_recipe_at_equal_parameters(tmp_path):
    from pathlib import Path

    from assistant.lab.bench.compare import VARIANTS, variant_recipe
    from assistant.lab.train.config import TrainConfig
    from model.model import count_parameters

    base = TrainConfig.from_toml(Path(__file__).parents[1] / "data" / "compare.toml")
    recipes = {name: variant_recipe(base, name, tmp_path) for name in VARIANTS}
    target = count_parameters(base.model)
    for name, recipe in recipes.items():
        assert abs(count_parameters(recipe.model) - target) / target < 0.01, name
        assert recipe.total_tokens == base.total_tokens and recipe.seed == base.seed
        assert recipe.model.n_layers == base.model.n_layers
    assert set(recipes["gdn only"].model.layer_pattern) == {"gdn"}
    assert recipes["full (twin)"].model.global_rope and not recipes["lql hybrid"].model.global_rope
    assert len({r.out for r in recipes.values()}) == len(VARIANTS)


def test_bench_serve_memory_samples_the_server_over_a_session(rustle, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # the server's index and feedback go here
    workspace = tmp_path / "kvstore"
    shutil.copytree(Path(__file__).resolve().parent.parent / "data" / "workspace", workspace)
    out = rustle("bench", "serve-memory", "--root", str(workspace), "--rounds", "4", "--every", "2", "--json").stdout
    report = json.loads(out)
    assert report["files"] == 4 and report["answered"] >= 1
    assert [r for r, _ in report["rss_mib"]] == [1, 2, 4] and all(mib > 50 for _, mib in report["rss_mib"])


def test_bench_train_step_times_steps_of_the_recipes_model(rustle, tmp_path):
    recipe = tmp_path / "train.toml"
    recipe.write_text('out = "unused"\nbatch_tokens = 512\nseq_schedule = [[0.0, 64]]\n[model]\nvocab_size = 256\n'
                      'd_model = 32\nn_heads = 2\nn_kv_heads = 1\nhead_dim = 16\nmlp_hidden = 64\nwindow = 16\n'
                      'layer_pattern = ["gdn", "swa", "lql"]\ngdn_heads = 2\ngdn_head_dim = 16\nchunk_size = 16\n'
                      'lql_dim = 16\nlql_heads = 1\n')
    out = rustle("bench", "train-step", "--config", str(recipe), "--modes", "eager", "--steps", "2", "--json").stdout
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["compiled"] is False and row["seq_len"] == 64 and row["batch_tokens"] == 512
    assert len(row["step_s"]) == 2 and row["tokens_per_s"] > 0
    bad = rustle("bench", "train-step", "--config", str(tmp_path / "missing.toml"), check=False)
    assert bad.returncode == 2 and "bad config" in bad.stdout


def test_bench_latency_measures_every_moment_on_a_tiny_model(rustle, tmp_path):
    root = tmp_path / "kvstore"
    shutil.copytree(Path(__file__).resolve().parent.parent / "data" / "workspace", root)
    model = save_tiny_model(tmp_path / "tiny")
    out = json.loads(rustle("bench", "latency", "--root", str(root), "--file", "src/main.rs", "--other",
                            "src/store.rs", "--model", str(model), "--cursors", "3", "--keystrokes", "2",
                            "--max-tokens", "2", "--json").stdout)
    assert out["cursors"] == 3 and out["keystrokes"] == 2 and out["switches"] == 3
    assert 0 < out["first_local_ms"] <= out["first_repo_ms"] and out["reopen_ms"] > 0 and out["repo_tokens"] > 0


def test_bench_scan_compares_the_scanner_with_tree_sitter(rustle):
    row = json.loads(rustle("bench", "scan", "--root", "tests/fixtures", "--every", "1", "--json").stdout)
    assert row["files"] == 5 and row["definitions"] > 50
    assert row["definitions_identical"] == 1.0 and row["imports_identical"] == 1.0
    assert 0.9 < row["references_recall"] <= 1.0 and row["scan_mb_per_s"] > 0
