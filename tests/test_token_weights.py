"""A recipe's `name_weight` and `far_repeat_weight` (assistant/lab/train/token_weights.py): which tokens are name
pieces, which are far repeats, the objective's weighted mean, and a real run that weighs its loss."""
import json

import pytest
import torch

from assistant.lab.train.config import TrainConfig
from assistant.lab.train.loop import train
from assistant.lab.train.memory_loss import training_objective
from assistant.lab.train.token_weights import TokenWeighing, far_repeats, is_name_piece, name_pieces, token_weighing
from model.model import RustleLM
from tokenizer import DEFAULT_TOKENIZER, load_tokenizer

from test_model import tiny
from test_train import recipe


@pytest.mark.parametrize("text, name", [(" foo", True), ("_bar", True), (".parse", True), ("Debug", True), ("x2", True),
                                        (" let", False), (" self", False), ("(", False), (" 42", False),
                                        (")?;", False), ("\n    ", False), ("::", False)])
def test_name_pieces_are_identifier_text_after_space_or_punctuation_but_not_keywords(text, name):
    assert is_name_piece(text) is name


def test_the_table_weighs_the_tokens_of_names_only():
    tok = load_tokenizer(DEFAULT_TOKENIZER)
    ids = tok.encode("    let foo_bar = self.parse(x, 42)?;").ids
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    weights = token_weighing(DEFAULT_TOKENIZER, 2.5, 1.0, 512)(x, y)[0]
    weighed = {tok.decode([int(i)]): float(w) for i, w in zip(y[0], weights)}
    assert weighed[" foo"] == weighed["_bar"] == weighed["x"] == 2.5
    assert weighed[" let"] == weighed[" self"] == weighed["("] == weighed[" 42"] == 1.0
    assert name_pieces(DEFAULT_TOKENIZER).shape == (tok.get_vocab_size(),)


def test_the_objective_is_the_mean_of_the_plain_losses_weighed_by_their_next_tokens():
    torch.manual_seed(0)
    model = RustleLM(tiny())
    x, y = torch.randint(0, 97, (2, 20)), torch.randint(0, 97, (2, 20))
    y[0, 0] = -100
    table = torch.ones(97)
    table[:40] = 4.0
    each = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100,
                                             reduction="none")
    w = table[y.clamp_min(0).flatten()] * (y.flatten() != -100)
    expected = (each * w).sum() / w.sum()
    got = training_objective(model, False, 0.0, 1, None, TokenWeighing(table > 1, 4.0))(x, y)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(training_objective(model, False, 0.0, 1, None)(x, y), model.loss(x, y))


@pytest.mark.parametrize("separator", [None, 4])
def test_far_repeats_are_pairs_last_seen_beyond_the_window(separator):
    """With a separator (token 4 here), only those whose latest earlier occurrence is in another file."""
    torch.manual_seed(0)
    x, y = torch.randint(0, 5, (2, 300)), torch.randint(0, 5, (2, 300))
    got = far_repeats(x, y, 20, separator)
    for b in range(2):
        file = torch.cumsum(x[b] == 4, 0)
        for t in range(300):
            earlier = [p for p in range(t) if x[b, p] == x[b, t] and y[b, p] == y[b, t]]
            far = bool(earlier) and t - earlier[-1] > 20
            other = bool(earlier) and bool(file[earlier[-1]] != file[t])
            assert bool(got[b, t]) is (far and (separator is None or other)), (b, t)
    assert got.any() and not got.all()


def test_far_repeat_weight_weighs_the_name_pieces_copied_from_beyond_the_window_only():
    tok = load_tokenizer(DEFAULT_TOKENIZER)
    line = tok.encode("    let parsed_header = decode_frame(buffer, 42)?;\n").ids
    filler = tok.encode(" ".join(str(i) for i in range(2000))).ids[:600]
    ids = torch.tensor([line + filler + line])
    x, y = ids[:, :-1], ids[:, 1:]
    weights = token_weighing(DEFAULT_TOKENIZER, 1.0, 3.0, 512)(x, y)[0]
    second = range(len(line) + len(filler), ids.shape[1] - 1)      # positions whose next token is the line again
    names = {t: is_name_piece(tok.decode([int(y[0, t])])) for t in second}
    assert 4 <= sum(names.values()) < len(names)
    assert all(float(weights[t]) == (3.0 if name else 1.0) for t, name in names.items())
    assert set(weights[:len(line)].tolist()) == {1.0}                # a first sight is not a repeat
    assert token_weighing(DEFAULT_TOKENIZER, 1.0, 1.0, 512) is None


def test_other_files_weighs_a_far_repeat_only_where_another_file_used_the_name_last():
    tok = load_tokenizer(DEFAULT_TOKENIZER)
    line = tok.encode("    let parsed_header = decode_frame(buffer, 42)?;\n").ids
    filler = tok.encode(" ".join(str(i) for i in range(2000))).ids[:600]
    sep = tok.encode("<|file_sep|>src/b.rs\n").ids
    same, other = torch.tensor([line + filler + line]), torch.tensor([line + filler + sep + line])
    weights = {name: token_weighing(DEFAULT_TOKENIZER, 1.0, 3.0, 512, "other-files")(ids[:, :-1], ids[:, 1:])[0]
               for name, ids in (("same", same), ("other", other))}
    assert set(weights["same"].tolist()) == {1.0}                   # far, but the file's own earlier line
    assert set(weights["other"][-len(line):].tolist()) == {1.0, 3.0}
    anywhere = token_weighing(DEFAULT_TOKENIZER, 1.0, 3.0, 512)(other[:, :-1], other[:, 1:])[0]
    assert torch.equal(anywhere, weights["other"])
    with pytest.raises(ValueError, match="far_repeat_from"):
        TrainConfig(out="x", corpus="c", far_repeat_from="elsewhere")


@pytest.mark.parametrize("key", ["name_weight", "far_repeat_weight"])
def test_a_run_weighs_its_training_loss_by_the_recipe(corpus, tmp_path, key):
    rows = {}
    for weight in (1.0, 3.0):
        config = TrainConfig.from_toml(recipe(tmp_path / f"w{weight}", corpus, **{key: weight},
                                              seq_schedule=[[0.0, 256]]))
        train(config, max_steps=1)
        rows[weight] = [json.loads(line) for line in (config.out / "metrics.jsonl").read_text().splitlines()]
    assert rows[1.0][0]["tokens"] == rows[3.0][0]["tokens"]
    assert abs(rows[1.0][0]["loss"] - rows[3.0][0]["loss"]) > 1e-4     # the same first batch, weighed otherwise
    with pytest.raises(ValueError, match=key):
        TrainConfig.from_toml(recipe(tmp_path / "bad", corpus, **{key: 0}))
