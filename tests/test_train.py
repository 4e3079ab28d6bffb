"""`rustle train` on a tiny corpus: packing with FIM, exact resume after a kill, weights-only starts, DDP."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.lab.train.checkpoint import find_checkpoint
from assistant.lab.train.config import TrainConfig
from assistant.lab.train.data import PackConfig, Packer, load_tokens, prepare_tokens
from assistant.lab.train.loop import drop_rows_after, train
from assistant.lab.train.ship import ship, shipped_recipe
from model.io import load_model, save_model
from tokenizer import DEFAULT_TOKENIZER, load_tokenizer
from tokenizer.special import FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME


TINY_MODEL = """
[model]
d_model = 32
n_heads = 2
n_kv_heads = 1
head_dim = 16
mlp_hidden = 64
layer_pattern = ["gdn", "swa", "lql"]
window = 16
gdn_heads = 2
gdn_head_dim = 16
chunk_size = 16
lql_dim = 16
lql_heads = 1
"""


def recipe(tmp: Path, corpus: Path, **extra) -> Path:
    settings = {"out": str(tmp / "run"), "corpus": str(corpus), "total_tokens": 6144, "batch_tokens": 512,
                "seq_schedule": [[0.0, 64], [0.5, 128]], "warmup_tokens": 1024, "eval_every_tokens": 2048,
                "eval_tokens": 256, "checkpoint_every_seconds": 0.0} | extra
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "train.toml"
    path.write_text("\n".join(lines) + "\n" + TINY_MODEL)
    return path


def test_packing_joins_a_crate_with_file_separators_and_cuts_fim_middles():
    tok = load_tokenizer()
    packer = Packer(tok, PackConfig(fim_rate=1.0, spm_rate=0.0))
    import random

    ids = packer.crate("demo", [("src/a.rs", "fn a() {}\n"), ("src/b.rs", "fn b() { a() }\n")], random.Random(0))
    special = {t: tok.token_to_id(t) for t in (REPO_NAME, FILE_SEP, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)}
    assert ids[0] == special[REPO_NAME] and ids.count(special[FILE_SEP]) == 2
    assert ids.count(special[FIM_PREFIX]) == ids.count(special[FIM_MIDDLE]) == 2
    # PSM: prefix, then suffix, then middle; undoing the cut gives back the file
    text = tok.decode(ids, skip_special_tokens=False)
    first = text.split("<|file_sep|>")[1]
    pre, rest = first.split("<|fim_prefix|>")[1].split("<|fim_suffix|>")
    suf, mid = rest.split("<|fim_middle|>")
    assert first.startswith("src/a.rs\n") and pre + mid + suf == "fn a() {}\n"


def test_token_files_are_reused_only_when_packed_the_same_way(corpus, tmp_path):
    fim = load_tokenizer().token_to_id(FIM_PREFIX)
    plain = prepare_tokens(tmp_path, corpus, DEFAULT_TOKENIZER, PackConfig(fim_rate=0.0))
    assert fim not in load_tokens(plain["train"])
    made = plain["train"].stat().st_mtime_ns
    prepare_tokens(tmp_path, corpus, DEFAULT_TOKENIZER, PackConfig(fim_rate=0.0))
    assert plain["train"].stat().st_mtime_ns == made  # same settings: the cache is reused
    with_fim = prepare_tokens(tmp_path, corpus, DEFAULT_TOKENIZER, PackConfig(fim_rate=1.0))
    assert fim in load_tokens(with_fim["train"])  # other settings: made again, not silently reused
    assert json.loads(with_fim["train"].with_suffix(".json").read_text())["fim_rate"] == 1.0


def test_a_repeated_crate_follows_itself_token_for_token(corpus, tmp_path):
    eos = load_tokenizer().token_to_id("<|endoftext|>")
    plain = load_tokens(prepare_tokens(tmp_path / "plain", corpus, DEFAULT_TOKENIZER,
                                       PackConfig(fim_rate=0.0))["train"])
    twice = load_tokens(prepare_tokens(tmp_path / "twice", corpus, DEFAULT_TOKENIZER,
                                       PackConfig(fim_rate=0.0, repeat_rate=1.0))["train"])

    def crates(tokens) -> list[list[int]]:
        ends = [i + 1 for i, t in enumerate(tokens.tolist()) if t == eos]
        return [tokens[a:b].tolist() for a, b in zip([0] + ends, ends)]

    once = crates(plain)
    assert len(once) > 1 and crates(twice) == [c for crate in once for c in (crate, crate)]


def test_echoed_chunks_follow_themselves_past_the_window():
    import random

    from assistant.lab.train.data import echo

    ids = list(range(5000))                       # distinct tokens: each copy can be found
    out = echo(ids, random.Random(0), 512, 2048)
    first = {}
    for i, t in enumerate(out):
        first.setdefault(t, i)
    back = [i - first[t] for i, t in enumerate(out) if first[t] != i]
    assert sorted(first, key=first.get) == ids and len(out) == 2 * len(ids)
    assert all(512 <= d <= 2048 for d in back[:-1000]) and len(set(back)) > 2   # one chunk back, lengths vary


def test_an_echoed_or_blocked_crate_keeps_one_end_of_text(corpus, tmp_path):
    eos = load_tokenizer().token_to_id("<|endoftext|>")
    plain = load_tokens(prepare_tokens(tmp_path / "plain", corpus, DEFAULT_TOKENIZER,
                                       PackConfig(fim_rate=0.0))["train"])
    echoed = load_tokens(prepare_tokens(tmp_path / "echo", corpus, DEFAULT_TOKENIZER,
                                        PackConfig(fim_rate=0.0, echo_rate=1.0, echo_min=8, echo_max=16))["train"])
    crates = int((plain == eos).sum())
    assert int((echoed == eos).sum()) == crates and len(echoed) == 2 * len(plain) - crates
    blocked = load_tokens(prepare_tokens(tmp_path / "copy", corpus, DEFAULT_TOKENIZER,
                                         PackConfig(fim_rate=0.0, copy_rate=1.0, copy_every=64))["train"])
    assert int((blocked == eos).sum()) == crates and len(blocked) > len(plain)
    code_blocks = PackConfig(fim_rate=0.0, copy_rate=1.0, copy_every=64, copy_code_share=1.0)
    coded = load_tokens(prepare_tokens(tmp_path / "code", corpus, DEFAULT_TOKENIZER, code_blocks)["train"])
    assert int((coded == eos).sum()) == crates and len(coded) > len(plain)
    after_first = coded[int(np.argmax(coded == eos)) + 1:]     # the first crate has no donor: random blocks
    assert not set(np.unique(after_first)) - set(np.unique(plain))   # code blocks: code's tokens, no random ids


@pytest.mark.parametrize("near", [0, 600])
def test_copy_blocks_come_back_further_on_and_leave_the_code_in_order(near):
    import random

    from assistant.lab.train.data import COPY_BLOCK, COPY_TOKENS, copy_blocks

    ids = [i % COPY_TOKENS for i in range(5000)]   # "code": ids below COPY_TOKENS
    out = copy_blocks(ids, random.Random(0), 512, 2048, 16384, near)
    assert [t for t in out if t < COPY_TOKENS] == ids and len(out) > len(ids)   # the code is all there, in order
    code_before = [0]                              # code tokens before each position: distances as the code counts
    for t in out:
        code_before.append(code_before[-1] + (t < COPY_TOKENS))
    seen: dict[tuple[int, ...], list[int]] = {}
    n = COPY_BLOCK[0]
    for i in range(len(out) - n + 1):              # every run of n random tokens: inside one block, or across two
        gram = tuple(out[i:i + n])
        if min(gram) >= COPY_TOKENS:
            seen.setdefault(gram, []).append(i)
    twice = [at for at in seen.values() if len(at) == 2]
    assert all(len(at) <= 2 for at in seen.values()) and len(twice) >= 5000 // 512 * COPY_BLOCK[0]
    for first, second in twice:                    # a block's copy comes later, at most `distance` code tokens on
        assert second > first and code_before[second] - code_before[first] <= 2048
        assert code_before[second] - code_before[first] >= near or code_before[second] == len(ids)  # or cut at the end


def test_code_blocks_are_spans_of_the_donor_that_come_back():
    import random

    from assistant.lab.train.data import COPY_BLOCK, COPY_TOKENS, copy_blocks

    ids, donor = [i % COPY_TOKENS for i in range(5000)], list(range(1000, 3000))   # donor: ids that count up
    out = copy_blocks(ids, random.Random(1), 512, 2048, 16384, 0, donor, code_share=1.0)
    assert [t for t in out if t < COPY_TOKENS] == ids
    inserted = [t for t in out if t >= COPY_TOKENS]
    assert set(inserted) <= set(donor) and len(inserted) >= 5000 // 512 * 2 * COPY_BLOCK[0]
    n = COPY_BLOCK[0]
    grams = {}
    for i in range(len(out) - n + 1):              # a run of n donor ids counting up: a piece of one block
        gram = tuple(out[i:i + n])
        if gram[0] >= COPY_TOKENS and all(b == a + 1 for a, b in zip(gram, gram[1:])):
            grams[gram] = grams.get(gram, 0) + 1
    assert grams and all(count % 2 == 0 for count in grams.values())   # each block's spans: there and again
    mixed = copy_blocks(ids, random.Random(1), 512, 2048, 16384, 0, donor, code_share=0.5)
    assert any(t >= 3000 for t in mixed) and any(1000 <= t < 3000 for t in mixed)   # random and code blocks


def test_training_lowers_the_loss_and_writes_logs_curve_and_a_loadable_checkpoint(corpus, tmp_path, rustle):
    config = recipe(tmp_path, corpus, lr=0.01)
    rustle("train", "--config", str(config))
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["tokens"] >= 6144 and {r["seq_len"] for r in rows} == {64, 128}
    evals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(evals) >= 2 and evals[-1] < evals[0]
    assert (run / "loss.png").stat().st_size > 1000
    model = load_model(run / "checkpoint")
    assert model.config.layer_pattern == ("gdn", "swa", "lql")
    # end to end: the trained folder is a model every command accepts
    files = sorted(str(p) for p in corpus.glob("../repos*/crate0/src/*.rs"))
    report = json.loads(rustle("eval", "ppl", "--files", *files, "--model", str(run / "checkpoint"),
                               "--context", "64", "--fp32", "--json").stdout)
    assert report["tokens"] > 0 and 0 < report["bits_per_byte"] < 8
    assert list(report["loss_by_position"]) == ["0-64"]
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.bin.pkl"))


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(corpus, tmp_path):
    whole = TrainConfig.from_toml(recipe(tmp_path / "a", corpus))
    train(whole)
    parted = TrainConfig.from_toml(recipe(tmp_path / "b", corpus))
    train(parted, max_steps=5)
    train(parted, resume=True)
    a, b = load_model(whole.out / "checkpoint"), load_model(parted.out / "checkpoint")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    state = json.loads((parted.out / "checkpoint" / "state.json").read_text())
    assert state["tokens"] == json.loads((whole.out / "checkpoint" / "state.json").read_text())["tokens"]


@pytest.mark.slow
def test_compiled_blocks_train_like_eager_ones_and_save_the_same_weights(corpus, tmp_path):
    runs = {}
    for name, compile in (("eager", False), ("compiled", True)):
        config = TrainConfig.from_toml(recipe(tmp_path / name, corpus, seq_schedule=[[0.0, 64]], compile=compile))
        train(config, max_steps=3)
        losses = [json.loads(line)["loss"] for line in (config.out / "metrics.jsonl").read_text().splitlines()]
        runs[name] = losses, load_model(config.out / "checkpoint").state_dict()
    (eager, eager_weights), (compiled, compiled_weights) = runs["eager"], runs["compiled"]
    assert len(eager) == len(compiled) == 3 and np.allclose(eager, compiled, rtol=2e-2)
    assert eager_weights.keys() == compiled_weights.keys()  # compiled in place: checkpoints stay plain
    for name, weight in eager_weights.items():
        assert torch.allclose(weight, compiled_weights[name], atol=1e-2), name


def test_lql_may_attend_every_key_in_training_and_its_checkpoint_keeps_the_served_selection(corpus, tmp_path):
    """train_lql_blocks = 0 trains as a model whose lql attends every key does (windows past its selection's
    reach), and the checkpoint keeps the model's own selection for serving."""
    selecting, every_key = "lql_recent = 16\nlql_blocks = 1\n", "lql_recent = 16\nlql_blocks = 0\n"
    runs = {}
    for name, model, extra in (("trained", selecting, {"train_lql_blocks": 0}), ("every", every_key, {}),
                               ("selected", selecting, {})):
        path = recipe(tmp_path / name, corpus, seq_schedule=[[0.0, 256]], **extra)
        path.write_text(path.read_text() + model)
        config = TrainConfig.from_toml(path)
        train(config, max_steps=2)
        runs[name] = [json.loads(line)["loss"] for line in (config.out / "metrics.jsonl").read_text().splitlines()]
    assert runs["trained"] == runs["every"] != runs["selected"]
    assert load_model(tmp_path / "trained" / "run" / "checkpoint").config.lql_blocks == 1
    with pytest.raises(ValueError, match="train_lql_blocks: lql_blocks = -1"):
        TrainConfig.from_toml(recipe(tmp_path / "bad", corpus, train_lql_blocks=-1))


def test_kill_minus_nine_then_resume(corpus, tmp_path, rustle):
    config = recipe(tmp_path, corpus, total_tokens=40000)
    exe = Path(sys.executable).parent / "rustle"
    proc = subprocess.Popen([str(exe), "train", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    def saved_step() -> int:
        found = find_checkpoint(tmp_path / "run")  # a kill between the two renames leaves checkpoint-old
        try:
            return json.loads((found / "state.json").read_text())["step"] if found else 0
        except (OSError, ValueError):
            return 0

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and saved_step() < 3:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = saved_step()
    assert killed_at >= 3
    state = tmp_path / "run" / "checkpoint" / "state.json"
    rustle("train", "--config", str(config), "--resume", "--max-steps", str(killed_at + 2))
    assert json.loads(state.read_text())["step"] == killed_at + 2
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, killed_at + 3))  # steps logged after the checkpoint were redone, not repeated


def test_resuming_forgets_rows_logged_past_the_checkpoint_and_a_torn_last_row(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    drop_rows_after(metrics, 2)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]


def test_weights_only_start_counts_cumulative_tokens(corpus, tmp_path):
    first = TrainConfig.from_toml(recipe(tmp_path, corpus))
    train(first)
    shipped = tmp_path / "shipped"
    metadata = ship(first.out, shipped, tmp_path / "train.toml")
    assert metadata["cumulative_tokens"] == 6144 and metadata["steps"] == 12
    assert not (shipped / "optimizer.safetensors").exists()
    from safetensors.torch import load_file
    assert {t.dtype for t in load_file(str(shipped / "model.safetensors")).values()} == {torch.bfloat16}
    more = TrainConfig.from_toml(recipe(tmp_path / "more", corpus, init_from=str(shipped), total_tokens=2048))
    state, _ = train(more)
    assert state.cumulative_tokens == 6144 + state.tokens
    after_run = TrainConfig.from_toml(recipe(tmp_path / "after", corpus, init_from=str(more.out / "checkpoint"),
                                             total_tokens=1024))
    assert train(after_run)[0].cumulative_tokens == 6144 + state.tokens + 1024    # from a run's checkpoint
    continued = shipped / "continue.toml"  # the next stage's recipe, committed beside the model it continues
    continued.write_text((tmp_path / "more" / "train.toml").read_text())
    again = ship(more.out, shipped, continued)  # replaces the first model; the first stage's record stays
    assert continued.is_file() and not (shipped / "train.toml").exists()
    assert shipped_recipe(shipped) == continued  # what `bench train-step` times by default
    assert (shipped / "stages" / "6144-tokens" / "train.toml").is_file()
    assert not (shipped / "stages" / "6144-tokens" / "continue.toml").exists()
    assert again["cumulative_tokens"] == 6144 + state.tokens
    stage = shipped / "stages" / "6144-tokens"
    assert json.loads((stage / "metadata.json").read_text())["cumulative_tokens"] == 6144
    assert (stage / "metrics.jsonl").read_text() == (first.out / "metrics.jsonl").read_text()
    assert (shipped / "metrics.jsonl").read_text() == (more.out / "metrics.jsonl").read_text()


def test_two_process_ddp_ranks_agree(corpus, tmp_path):
    config = recipe(tmp_path, corpus, total_tokens=2048)
    script = tmp_path / "ddp.py"
    script.write_text(f"""
import os, torch
from pathlib import Path
from assistant.lab.train.config import TrainConfig
from assistant.lab.train.loop import train
torch.set_num_threads(1)
config = TrainConfig.from_toml(Path({str(config)!r}))
state, model = train(config)  # each rank's own copy of the weights
total = sum(float(p.double().sum()) for p in model.parameters())
Path({str(tmp_path)!r}, f"rank{{os.environ['RANK']}}.txt").write_text(repr(total) + " " + str(state.step))
""")
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", str(script)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    assert rank0 == rank1


def test_a_step_whose_loss_is_not_a_number_stops_the_run_before_it_changes_the_weights(corpus, tmp_path):
    first = TrainConfig.from_toml(recipe(tmp_path / "a", corpus))
    train(first, max_steps=1)
    broken = load_model(first.out / "checkpoint")
    with torch.no_grad():
        broken.blocks[0].mlp_norm.weight[0] = float("nan")      # a checkpoint gone bad: every loss is NaN
    save_model(broken, tmp_path / "broken", DEFAULT_TOKENIZER)
    config = TrainConfig.from_toml(recipe(tmp_path / "b", corpus, init_from=str(tmp_path / "broken")))
    with pytest.raises(FloatingPointError, match="not a finite number"):
        train(config)
    assert find_checkpoint(config.out) is None and not (config.out / "metrics.jsonl").read_text()
