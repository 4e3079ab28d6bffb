"""The model's memory of its context (model/memory.py): the vote of earlier positions' hidden states, mixed into a
cached forward's next-token distribution; causal, the same in any pieces and through snapshots, and the same in
the evaluations' one-pass form (repo-gain), with the constant reader and with fitted ones (token keys, a gate; the
final states or a middle block's)."""
from dataclasses import replace

import pytest
import torch

from assistant.lab.eval.repo_gain import token_losses
from model.cache import export_snapshots, import_snapshots
from model.config import ModelConfig
from model.memory import GATE_FEATURES, MemoryReader, new_memory, vote
from model.model import RustleLM

CONFIG = ModelConfig(vocab_size=64, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64, window=8,
                     layer_pattern=("gdn", "swa", "gdn", "lql"), gdn_heads=2, gdn_head_dim=16, chunk_size=16,
                     lql_dim=16, memory_weight=0.5)


READERS = ["constant", "fitted", "layer", "previous"]


def models(reader: str = "constant") -> tuple[RustleLM, RustleLM]:
    """(a model with the memory, the same weights without it); its reader: the constant one, a fitted one (token
    keys and a gate), a fitted one that reads block 1's output, or that one also weighing the key before each."""
    torch.manual_seed(3)
    remembering = RustleLM(CONFIG).eval()
    plain = RustleLM(replace(CONFIG, memory_weight=0.0)).eval()
    plain.load_state_dict(remembering.state_dict())
    if reader != "constant":
        d = (CONFIG.d_model, CONFIG.memory_dim)
        gate = torch.randn(len(GATE_FEATURES)) * 0.5
        remembering.fitted_memory = MemoryReader(torch.randn(d), torch.randn(d) * 0.3, 12.0, gate,
                                                 layer=None if reader == "fitted" else 1,
                                                 previous=1.0 if reader == "previous" else 0.0
                                                 ).with_embeddings(remembering.embed.weight)
    return remembering, plain


def tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("reader", ["constant", "layer"])
@torch.inference_mode()
def test_a_sequence_seen_before_is_predicted_from_memory(reader):
    """An untrained network cannot copy; its memory fetches what followed the same hidden state before."""
    remembering, plain = models(reader)
    if reader == "layer":                      # a sure vote: the gate's bias alone, as the constant reader's
        remembering.fitted_memory = replace(remembering.fitted_memory, gate=torch.tensor([3.0, 0, 0, 0, 0, 0, 0]))
    seq = tokens(48)
    x = torch.cat([seq, seq[:, :24]], 1)
    with_memory = remembering(x, remembering.new_cache())[0].log_softmax(-1)
    without = plain(x, plain.new_cache())[0].log_softmax(-1)
    assert torch.allclose(without, plain(x)[0].log_softmax(-1), atol=1e-5)   # no memory: the cache changes nothing
    rows = torch.arange(49, 71)                                               # inside the repeat, past its start
    target = x[0, rows + 1]
    assert with_memory[rows, target].mean() > without[rows, target].mean() + 1.0


@torch.inference_mode()
def test_a_position_is_voted_on_by_the_positions_before_it_only():
    remembering, _ = models()
    x = tokens(60)
    changed = torch.cat([x[:, :40], tokens(20, seed=9)], 1)
    first = remembering(x, remembering.new_cache())[0, :40]
    second = remembering(changed, remembering.new_cache())[0, :40]
    assert torch.allclose(first, second, atol=1e-5)
    assert remembering(x[:, :1], remembering.new_cache()).shape == (1, 1, 64)   # nothing before: the network's


@pytest.mark.parametrize("reader", READERS)
@torch.inference_mode()
def test_pieces_snapshots_and_a_saved_state_give_what_one_pass_gives(reader):
    remembering, _ = models(reader)
    x = tokens(70)
    whole = remembering(x, remembering.new_cache())
    cache = remembering.new_cache()
    head = remembering(x[:, :30], cache)
    mark = cache.snapshot()
    remembering(tokens(15, seed=5), cache)                       # another branch from the same point, held by a
    cache.snapshot()                                             # snapshot: the tail branches off into new segments
    cache.restore(mark)
    tail = torch.cat([remembering(x[:, i:i + 7], cache) for i in range(30, 70, 7)], 1)
    # fp16 keys: pieces' hidden states differ from one pass's in the last bits, which a key may round apart; a
    # position or snapshot gone wrong moves a vote by far more
    assert torch.allclose(torch.cat([head, tail], 1), whole, atol=1e-3)
    tensors, plain = export_snapshots([mark])                   # as persist.py saves a prefilled part
    fresh = remembering.new_cache()
    fresh.restore(import_snapshots(fresh, tensors, plain)[0])
    assert torch.allclose(remembering(x[:, 30:], fresh), whole[:, 30:], atol=1e-3)


@pytest.mark.parametrize("reader", READERS)
def test_the_evaluations_one_pass_scores_as_the_cache_does(reader):
    remembering, _ = models(reader)
    ids = tokens(50)[0].tolist()
    with torch.inference_mode():
        cached = remembering(torch.tensor([ids[:-1]]), remembering.new_cache())[0]
    expected = torch.nn.functional.cross_entropy(cached, torch.tensor(ids[1:]), reduction="none")
    assert torch.allclose(token_losses(remembering, ids, bf16=False), expected, atol=1e-4)


@torch.inference_mode()
def test_a_candidate_whose_key_before_matches_the_querys_outvotes_a_nearer_one():
    """Position 4's key is the query's own, but only position 1 follows what the query follows (the key before it):
    the plain vote goes to what followed 4, the one that weighs the key before to what followed 1."""
    e = torch.eye(8)
    near = torch.nn.functional.normalize(e[2] + 0.33 * e[3], dim=0)            # cosine 0.95 with the query
    hidden = torch.stack([e[0], near, e[4], e[1], e[2], e[5], e[0], e[2]])      # ... then e[0], the query e[2]
    ids = torch.arange(10, 18)
    config = replace(CONFIG, memory_k=1)
    for previous, expected in ((0.0, 15), (1.0, 12)):
        memory = new_memory(MemoryReader(torch.eye(8), None, 50.0, torch.zeros(7), previous=previous), "cpu")
        memory.append(hidden[None], ids[None])
        votes, _ = vote(memory, hidden[7:], torch.tensor([7]), config)
        assert int(votes[0].argmax()) == expected and float(votes[0].max()) > 0.99


@torch.inference_mode()
def test_a_reader_of_a_middle_block_keys_that_blocks_states():
    remembering, _ = models("layer")
    x = tokens(40)
    hidden, states = remembering.hidden_and_read(x, layer=1)
    assert torch.equal(hidden, remembering.hidden(x)) and not torch.allclose(states, hidden, atol=1e-2)
    assert torch.equal(remembering.hidden_and_read(x)[1], hidden)              # no layer: the final states
    by_layer = remembering(x, remembering.new_cache())
    remembering.fitted_memory = replace(remembering.fitted_memory, layer=None)   # the same maps on the final states
    assert not torch.allclose(remembering(x, remembering.new_cache()), by_layer, atol=1e-3)


def test_the_constant_readers_weight_is_its_gates_with_no_feature_computed():
    probs = torch.softmax(torch.randn(5, 64), -1)
    votes, top = torch.softmax(torch.randn(5, 64), -1), torch.rand(5, 4)
    constant = MemoryReader.constant(CONFIG)
    assert torch.allclose(constant.weight(probs, votes, top), torch.full((5, 1), CONFIG.memory_weight))
    leaning = MemoryReader(constant.key_hidden, None, 16.0, torch.tensor([0.1, 2.0, 0, 0, 0, 0, 0]))
    assert torch.allclose(leaning.weight(probs, votes, top)[:, 0], torch.sigmoid(0.1 + 2.0 * votes.max(-1).values))


@pytest.mark.parametrize("field,value", [("memory_weight", 1.0), ("memory_weight", -0.1), ("memory_k", 0),
                                         ("memory_scale", 0.0), ("memory_dim", 0)])
def test_a_memory_setting_out_of_range_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        replace(CONFIG, **{field: value})


def test_under_bf16_autocast_the_vote_is_computed_in_fp32(monkeypatch):
    """The evaluations run the model under autocast; without the C kernel (no compiler) the similarities are a
    PyTorch matmul, which autocast would make bf16: keys ~0.95 alike need fp32 to rank."""
    import model.memory

    monkeypatch.setattr(model.memory, "few_rows_linear", lambda *args: None)
    remembering, _ = models()
    x = tokens(40)
    exact = remembering(x, remembering.new_cache())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = remembering(x, remembering.new_cache())
    assert cast.dtype == torch.float32 and (cast - exact).abs().max() < 0.1


def test_a_model_with_a_memory_starts_a_recipe_without_one_and_back():
    """The memory changes no weight: a shipped model with it continues in a recipe without it (and grafts)."""
    from assistant.lab.train.graft import start_weights

    remembering, plain = models()
    fresh = RustleLM(replace(CONFIG, memory_weight=0.0, mlp_hidden=96))
    assert start_weights(plain, remembering, graft=False, source="shipped") == []
    assert start_weights(remembering, plain, graft=False, source="run") == []
    assert start_weights(fresh, remembering, graft=True, source="shipped") == []      # a wider MLP, grafted
