"""Fitting the memory's reader (assistant/lab/train/memory_fit.py, `rustle train-memory`): the fit lowers the
nats it is fitted on, the reader travels with the model folder, and one that does not fit the model is refused."""
import json
from dataclasses import replace

import pytest
import torch

from assistant.cli.main import main
from assistant.lab.train.memory_fit import MemoryFitConfig, fit_gate, fit_keys, memory_nats, training_crates
from assistant.lab.train.ship import ship
from model.config import ModelConfig
from model.io import MEMORY, MEMORY_LOG, ModelFolderError, load_model, save_memory, save_model
from model.memory import MemoryReader
from model.model import RustleLM
from tokenizer import DEFAULT_TOKENIZER

TINY = ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64, window=16,
                   layer_pattern=("swa", "lql"), lql_dim=16, lql_heads=1, memory_weight=0.2, memory_dim=8)
FIT = MemoryFitConfig(crates=2, every=1, validation_crates=1, validation_every=1, ctx=1024, min_tokens=64,
                      queries=64, min_position=32, steps=60, lr=1e-2, gate_every=1, gate_steps=100, report_from=32)


def tiny_model() -> RustleLM:
    torch.manual_seed(0)
    return RustleLM(TINY).eval()


def repeating(n: int, seed: int, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden states, `layer`'s states, tokens) of a sequence that repeats spans of itself: earlier keys predict
    later tokens."""
    generator = torch.Generator().manual_seed(seed)
    spans = [torch.randint(100, 400, (24,), generator=generator) for _ in range(4)]
    tokens = torch.cat([spans[int(i)] for i in torch.randint(0, 4, (n // 24 + 1,), generator=generator)])[:n + 1]
    with torch.no_grad():
        hidden, states = tiny_model().hidden_and_read(tokens[None, :-1], layer=layer)
    return hidden[0], states[0], tokens


@pytest.mark.parametrize("layer", [None, 0])
def test_the_fit_lowers_the_nats_it_is_fitted_on(layer):
    model, train = tiny_model(), [repeating(300, seed, layer) for seed in range(2)]
    constant = MemoryReader.constant(TINY)
    keys = fit_keys(model, train, replace(FIT, layer=layer), lambda row: None)
    fitted = fit_gate(model, keys, train, FIT, lambda row: None)
    assert fitted.layer == layer
    before = memory_nats(model, constant, train, FIT.min_position)
    assert memory_nats(model, fitted, train, FIT.min_position) < before - 0.05
    assert keys.token_keys is not None and keys.token_keys.shape == (TINY.vocab_size, TINY.memory_dim)
    assert not torch.equal(fitted.gate, constant.gate)


@pytest.mark.parametrize("dim", [8, 12])         # the model's memory_dim, and keys of the reader's own width
def test_a_fitted_reader_travels_with_the_model_folder(tmp_path, dim):
    model = tiny_model()
    fitted = MemoryReader(torch.randn(32, dim), torch.randn(32, dim), 10.0, torch.randn(7), previous=dim / 24)
    model.fitted_memory = fitted.bf16_rounded(model.embed.weight)       # as its file holds it
    save_model(model, tmp_path, DEFAULT_TOKENIZER)
    save_memory(fitted, tmp_path / MEMORY)
    from safetensors.torch import load_file
    assert {t.dtype for t in load_file(str(tmp_path / MEMORY)).values()} == {torch.bfloat16}
    loaded = load_model(tmp_path)
    x = torch.randint(0, 16384, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x, model.new_cache())
        assert torch.allclose(loaded(x, loaded.new_cache()), expected, atol=1e-5)
        assert not torch.allclose(tiny_model()(x, tiny_model().new_cache()), expected, atol=1e-3)  # it reads


def test_a_reader_that_does_not_fit_the_model_is_refused(tmp_path):
    model = tiny_model()
    save_model(model, tmp_path, DEFAULT_TOKENIZER)
    for key_hidden, key_token in ((torch.randn(16, 8), torch.randn(16, 8)), (torch.randn(32, 8), torch.randn(32, 4))):
        save_memory(MemoryReader(key_hidden, key_token, 10.0, torch.zeros(7)), tmp_path / MEMORY)
        with pytest.raises(ModelFolderError, match="train-memory"):     # another width of model, or of key
            load_model(tmp_path)
    save_memory(MemoryReader(torch.randn(32, 8), torch.randn(32, 8), 10.0, torch.zeros(7), layer=2), tmp_path / MEMORY)
    with pytest.raises(ModelFolderError, match="layer"):               # the tiny model's blocks are 0 and 1
        load_model(tmp_path)
    save_memory(MemoryReader(torch.randn(32, 8), torch.randn(32, 8), 10.0, torch.zeros(7), previous=float("inf")),
                tmp_path / MEMORY)
    with pytest.raises(ModelFolderError, match="key before"):
        load_model(tmp_path)
    (tmp_path / MEMORY).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFolderError, match=MEMORY):
        load_model(tmp_path)


def test_train_memory_writes_the_reader_and_its_log(corpus, tmp_path):
    folder, recipe, fit = tmp_path / "model", tmp_path / "fit.toml", replace(FIT, layer=0, dim=12, previous=0.5)
    save_model(tiny_model(), folder, DEFAULT_TOKENIZER)
    recipe.write_text("".join(f"{k} = {v!r}\n" for k, v in vars(fit).items()).replace("'", '"'))
    assert main(["train-memory", "--config", str(recipe), "--model", str(folder), "--corpus", str(corpus)]) == 0
    reader = load_model(folder).fitted_memory
    assert reader.layer == 0 and reader.key_hidden.shape == (32, 12)   # the block it reads and its width travel,
    assert reader.previous == 0.5                                      # and how much the key before counts
    rows = [json.loads(line) for line in (folder / MEMORY_LOG).read_text().splitlines()]
    assert rows[0]["config"] == vars(fit) and rows[-1]["stage"] == "report" and rows[-1]["fitted_nats"] > 0
    off = tmp_path / "off"
    save_model(RustleLM(replace(TINY, memory_weight=0.0)), off, DEFAULT_TOKENIZER)
    assert main(["train-memory", "--config", str(recipe), "--model", str(off), "--corpus", str(corpus)]) == 2
    for bad in ("steps = 10\nwarmup = 3\n", "crates = 0\n", "lr = -1.0\n", "layer = -1\n", "layer = 2\n",
                "dim = 0\n", "dim = 8.5\n", "previous = -1.0\n", "previous = nan\n", "anonymize_rate = 1.5\n",
                "common_share = -0.1\n"):
        recipe.write_text(bad)
        assert main(["train-memory", "--config", str(recipe), "--model", str(folder), "--corpus", str(corpus)]) == 2


def test_shipping_new_weights_drops_the_reader_fitted_to_the_old(tmp_path):
    folder = tmp_path / "shipped"
    save_model(tiny_model(), folder, DEFAULT_TOKENIZER)
    (folder / MEMORY).write_bytes(b"fitted to other weights")
    (folder / MEMORY_LOG).write_text("its fit\n")
    run = tmp_path / "run" / "checkpoint"                      # a run's checkpoint as ship reads it
    save_model(tiny_model(), run, DEFAULT_TOKENIZER)
    (run / "state.json").write_text(json.dumps({"cumulative_tokens": 1, "tokens": 1, "step": 1,
                                                "config": {"total_tokens": 1}}))
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    ship(tmp_path / "run", folder)
    assert not (folder / MEMORY).exists() and load_model(folder).fitted_memory is None
    assert not (folder / MEMORY_LOG).exists()


def test_the_fit_can_read_crates_whose_own_names_are_renamed():
    def crate(n: int) -> tuple[str, list[tuple[str, str]]]:
        return f"crate{n}", [("src/lib.rs", f"pub struct Frobnicator{n};\npub fn make_widget{n}() {{}}\n"),
                             ("src/a.rs", f"use crate::Frobnicator{n};\nfn run() {{ make_widget{n}(); }}\n"),
                             ("src/b.rs", "fn shared_helper() -> Vec<u8> { Vec::new() }\n")]
    crates = [crate(n) for n in range(4)]
    fit = replace(FIT, every=2, common_share=0.5)            # own names: one crate in four; shared ones: all four
    assert list(training_crates(crates, fit)) == [crates[0], crates[2]]
    renamed = list(training_crates(crates, replace(fit, anonymize_rate=1.0)))
    assert [name for name, _ in renamed] == ["crate0", "crate2"]
    for (_, files), n in zip(renamed, (0, 2)):
        text = "".join(t for _, t in files)
        assert f"Frobnicator{n}" not in text and f"make_widget{n}" not in text
        new = files[0][1].split()[2].rstrip(";")                          # `pub struct NEW;`
        assert new[0].isupper() and f"use crate::{new};" in files[1][1]   # one new name in every file
        assert files[2] == crates[n][1][2]                                # a name every crate uses stays
