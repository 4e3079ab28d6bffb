"""Training the network for its memory (assistant/lab/train/memory_loss.py): the vote's nats, the recipe's
`memory_loss` term in a real run, and a start without a fitted reader refused."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from assistant.lab.train.config import TrainConfig
from assistant.lab.train.data import load_tokens
from assistant.lab.train.loop import train
from model.config import ModelConfig
from model.io import MEMORY, ModelFolderError, load_memory, load_model, save_memory, save_model
from model.loss import IGNORE
from model.memory import MemoryReader, vote_nats
from model.model import RustleLM
from tokenizer import DEFAULT_TOKENIZER

from test_train import recipe

TINY = ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64, window=16,
                   layer_pattern=("gdn", "swa", "lql"), gdn_heads=2, gdn_head_dim=16, chunk_size=16, lql_dim=16,
                   lql_heads=1, memory_weight=0.2, memory_dim=8)


def test_the_vote_is_sure_where_keys_repeat_with_their_next_tokens():
    generator = torch.Generator().manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    nexts = torch.tensor([5, 6, 7, 5, 6, 7])
    queries = torch.tensor([3, 4, 5])
    aligned = vote_nats(keys[[0, 1, 2, 0, 1, 2]], nexts, queries, 30.0)   # a repeat's keys match its first time
    shuffled = vote_nats(keys, nexts, queries, 30.0)
    assert aligned < 0.01 < shuffled
    assert vote_nats(keys, torch.arange(6), queries, 30.0) is None        # nothing earlier was followed alike
    ignored = torch.tensor([IGNORE, 6, 7, IGNORE, 6, 7])                    # IGNORE neither asks nor answers
    assert vote_nats(keys[[0, 1, 2, 0, 1, 2]], ignored, torch.tensor([3]), 30.0) is None


def start_folder(path):
    """A tiny model folder with a fitted-reader file, as `rustle train-memory` leaves one."""
    torch.manual_seed(0)
    model = RustleLM(TINY)
    save_model(model, path, DEFAULT_TOKENIZER)
    generator = torch.Generator().manual_seed(1)
    save_memory(MemoryReader(torch.randn(32, 8, generator=generator), torch.randn(32, 8, generator=generator), 20.0,
                             torch.zeros(7)), path / MEMORY)
    return path


def memory_nats_of(folder, reader, data: np.ndarray) -> float:
    model = load_model(folder).float()
    reader = reader.with_embeddings(model.embed.weight)
    values = []
    with torch.no_grad():
        for start in range(0, len(data) - 129, 128):
            tokens = torch.from_numpy(data[start:start + 129].astype(np.int64))
            keys = reader.keys(model.hidden(tokens[None, :-1])[0], tokens[:-1])
            nats = vote_nats(keys, tokens[1:], torch.arange(32, 128), reader.scale)
            values += [] if nats is None else [float(nats)]
    return float(np.mean(values))


def test_a_run_with_memory_loss_trains_states_its_reader_tells_apart(corpus, tmp_path):
    start = start_folder(tmp_path / "start")
    model_toml = "\n[model]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in
                                          {**TINY.__dict__, "layer_pattern": list(TINY.layer_pattern)}.items())
    runs = {}
    for weight in (0.0, 3.0):
        path = recipe(tmp_path / f"w{weight}", corpus, init_from=str(start), memory_loss=weight,
                      seq_schedule=[[0.0, 128]], lr=3e-3)
        path.write_text(path.read_text().split("[model]")[0] + model_toml)
        config = TrainConfig.from_toml(path)
        train(config)
        runs[weight] = config.out
    rows = [json.loads(line) for line in (runs[3.0] / "metrics.jsonl").read_text().splitlines()]
    assert all(abs(r["loss"] - r["next_token_nats"] - 3.0 * r["memory_nats"]) < 1e-3 for r in rows)
    assert "memory_nats" not in json.loads((runs[0.0] / "metrics.jsonl").read_text().splitlines()[0])
    reader = load_memory(start / MEMORY, TINY)
    held_out = load_tokens(runs[0.0] / "tokens" / "validation.bin")
    plain, trained = (memory_nats_of(runs[w] / "checkpoint", reader, held_out) for w in (0.0, 3.0))
    assert trained < plain - 0.05


def test_memory_loss_needs_a_start_with_a_fitted_reader(corpus, tmp_path):
    start = start_folder(tmp_path / "start")
    (start / MEMORY).unlink()
    config = TrainConfig.from_toml(recipe(tmp_path, corpus, init_from=str(start), memory_loss=0.5))
    config = replace(config, model=TINY)
    with pytest.raises(ModelFolderError, match="train-memory"):
        train(config, max_steps=1)
    with pytest.raises(ValueError, match="memory_loss"):
        TrainConfig.from_toml(recipe(tmp_path / "bad", corpus, memory_loss=-1))
