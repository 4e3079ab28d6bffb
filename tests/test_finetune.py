"""`rustle finetune` on a fixture repository, and `rustle eval lines --finetune`: the held-out files it scores, the
budget in passes over the files, the base's memory reader carried along, and the task files never trained on."""
import json
from pathlib import Path

import torch

from assistant.lab.corpus.build import BuildConfig, build
from assistant.lab.corpus.shards import texts
from assistant.lab.corpus.split import SplitConfig
from assistant.lab.eval.adapt import training_copy
from assistant.lab.train.data import load_tokens
from assistant.lab.train.config import TrainConfig
from assistant.lab.train.finetune import FinetuneConfig, finetune
from assistant.lab.train.loop import lr_at
from model.config import ModelConfig
from model.io import MEMORY, load_model, save_memory, save_model
from model.memory import MemoryReader
from model.model import RustleLM
from tokenizer import DEFAULT_TOKENIZER

TINY = ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                   layer_pattern=("gdn", "swa", "lql"), window=16, gdn_heads=2, gdn_head_dim=16, chunk_size=16,
                   lql_dim=16, lql_heads=1, memory_weight=0.2, memory_dim=8)


def team_repo(root: Path, files: int = 20) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "team"\nversion = "0.1.0"\n')
    for f in range(files):  # distinct identifiers in every line, or near-duplicate removal keeps one file
        (root / "src" / f"m{f}.rs").write_text("".join(
            f"pub fn step_{f}_{k}(state_{f}: &mut Vec<u{8 << (k % 4)}>) -> usize {{ state_{f}.len() * {k} }}\n"
            for k in range(12)))
    return root


def tiny_base(out: Path, reader: bool = True) -> Path:
    torch.manual_seed(0)
    save_model(RustleLM(TINY), out, DEFAULT_TOKENIZER)
    if reader:
        save_memory(MemoryReader(torch.randn(32, 8), torch.randn(32, 8), 10.0, torch.randn(7)), out / MEMORY)
    return out


def test_finetune_on_a_fixture_repo_reports_held_out_bits_per_byte_and_writes_a_model(tmp_path, rustle):
    repo, base = team_repo(tmp_path / "team"), tiny_base(tmp_path / "base", reader=False)
    out = rustle("finetune", "--repos", str(repo), "--out", str(tmp_path / "ft"), "--model", str(base),
                 "--tokens", "4096", "--lr", "0.01", "--seq-len", "64", "--batch-tokens", "512", "--json").stdout
    report = json.loads(out.splitlines()[-1])
    assert report["held_out_files"] >= 1 and report["tokens"] > 0
    assert report["bits_per_byte_after"] < report["bits_per_byte_before"]
    model = load_model(Path(report["model"]))
    assert model.config == TINY and model.fitted_memory is None
    assert json.loads((Path(report["model"]) / "metadata.json").read_text())["finetuned_from"] == str(base)
    bad = rustle("finetune", "--repos", str(repo), "--out", str(tmp_path / "ft2"), "--model", str(base), "--epochs",
                 "0", check=False)
    assert bad.returncode == 2 and "--epochs" in bad.stdout and not (tmp_path / "ft2").exists()
    bad = rustle("finetune", "--repos", str(repo), "--out", str(tmp_path / "ft2"), "--model", str(base), "--threads",
                 "-1", check=False)
    assert bad.returncode == 2 and "--threads" in bad.stdout and not (tmp_path / "ft2").exists()


def test_the_budget_is_passes_over_the_training_files_and_the_base_reader_comes_along(tmp_path):
    repo, base = team_repo(tmp_path / "team"), tiny_base(tmp_path / "base")
    config = FinetuneConfig(repos=[repo], out=tmp_path / "ft", model=base, epochs=2.0, lr=0.01, seq_len=64,
                            batch_tokens=256)
    report = finetune(config)
    train_tokens = len(load_tokens(tmp_path / "ft" / "run" / "tokens" / "train.bin"))
    assert 2 * train_tokens <= report.tokens < 2 * train_tokens + 256      # whole steps of 256 tokens
    capped = finetune(FinetuneConfig(repos=[repo], out=tmp_path / "ft1", model=base, tokens=512, lr=0.01,
                                     seq_len=64, batch_tokens=256))
    assert capped.tokens == 512 < train_tokens
    model_dir = Path(report.model)
    assert (model_dir / MEMORY).read_bytes() == (base / MEMORY).read_bytes()
    assert load_model(model_dir).fitted_memory is not None


def test_a_small_repository_still_holds_one_file_out_for_finetuning(tmp_path):
    # 10% of three files rounds to none: without a held-out file `rustle finetune` refused a small repository.
    # And it is the smallest file: the task files of `eval lines --finetune` taken away, a repository of two files
    # held its 24 KB one out and trained on 376 bytes.
    repo = team_repo(tmp_path / "team", files=3)
    small = (repo / "src" / "m1.rs").read_text().split("\n")
    (repo / "src" / "m1.rs").write_text("\n".join(small[:6]) + "\n")
    for seed in range(4):
        corpus = tmp_path / f"corpus{seed}"
        build(BuildConfig(out=corpus, repos=[repo], split=SplitConfig(seed=seed, validation=0.1, test=0.0,
                                                                        unit="file")))
        assert list(texts(corpus, "validation")) == [(repo / "src" / "m1.rs").read_text()]
        assert len(list(texts(corpus, "train"))) == 2


def test_the_training_copy_leaves_the_task_files_and_links_out(tmp_path):
    repo = team_repo(tmp_path / "team", files=4)
    (repo / "src" / "link.rs").symlink_to(repo / "src" / "m0.rs")
    copy = training_copy(repo, {"src/m1.rs", "src/m3.rs"}, tmp_path / "copy")
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        "Cargo.toml", "src/m0.rs", "src/m2.rs"]
    assert (copy / "src" / "m2.rs").read_text() == (repo / "src" / "m2.rs").read_text()


def test_eval_lines_fine_tunes_on_each_repository_without_its_task_files(tmp_path, rustle):
    base = tiny_base(tmp_path / "base")
    tasks = []
    for name, files in (("big", 6), ("small", 2)):
        repo = team_repo(tmp_path / name, files=files)
        line = (repo / "src" / "m1.rs").read_text().split("\n")[3]
        tasks.append({"id": name, "root": str(repo), "path": "src/m1.rs", "line": 3, "character": 10,
                      "target": line[10:], "kind": "mid"})
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    work = tmp_path / "work"
    report = json.loads(rustle("eval", "lines", str(tmp_path / "tasks.jsonl"), "--model", str(base), "--finetune",
                               str(work), "--served", "--json").stdout.splitlines()[-1])
    assert report["n"] == 2
    # one file beside the task's cannot be both trained on and held out: that repository kept the base model
    assert list(report["finetuned"]["kept_base"]) == ["small"]
    trained = sorted(p.name for p in (work / "big" / "repo" / "src").iterdir())
    assert trained == ["m0.rs", "m2.rs", "m3.rs", "m4.rs", "m5.rs"]
    assert (work / "big" / "model" / MEMORY).is_file() and not (work / "big" / "run" / "checkpoint").exists()
    assert not torch.equal(load_model(work / "big" / "model").embed.weight, load_model(base).embed.weight)


def test_a_fine_tune_of_a_few_steps_takes_its_first_at_the_peak_rate():
    # a small repository's three passes are a few steps: a warm-up of 2% of them would be a part of the first step
    few = TrainConfig(out=Path("ft"), init_from=Path("base"), total_tokens=3 * 4096, batch_tokens=4096, lr=3e-4,
                      min_lr=3e-5)
    assert lr_at(few, 0) == few.lr and few.min_lr < lr_at(few, 4096) < few.lr
    many = TrainConfig(out=Path("ft"), init_from=Path("base"), total_tokens=100 * 4096, batch_tokens=4096, lr=3e-4)
    assert lr_at(many, 0) < many.lr / 4 and lr_at(many, 2 * 4096) == many.lr    # over 2% of the run: 8,192 tokens


def test_the_base_is_kept_where_held_out_files_say_fine_tuning_did_not_help(tmp_path):
    # lr 0: the weights do not move, so the held-out score is the base's, not lower
    repo, base = team_repo(tmp_path / "team"), tiny_base(tmp_path / "base")
    report = finetune(FinetuneConfig(repos=[repo], out=tmp_path / "ft", model=base, lr=0.0, seq_len=64,
                                     batch_tokens=64, epochs=1.0))
    assert report.bits_per_byte_after == report.bits_per_byte_before and not report.tuned
    moved = finetune(FinetuneConfig(repos=[repo], out=tmp_path / "ft1", model=base, lr=0.01, seq_len=64,
                                    batch_tokens=256, epochs=1.0))
    assert moved.tuned and moved.bits_per_byte_after < moved.bits_per_byte_before
