"""lql's attention: block selection, log-scaled queries and shifted keys each answer the same warm and cold."""
import pytest
import torch

from assistant.lab.train.graft import start_weights
from model.model import RustleLM
from tiny_models import relative_error, tiny


@pytest.mark.parametrize("batch", [1, 2])                  # 1: the C kernel on CPU; 2: PyTorch's gathers
def test_selected_lql_attention_answers_the_same_warm_and_cold(batch):
    """Past recent + 64 * blocks keys an lql query sees selected blocks only: which ones depends on its position,
    not on how the tokens were fed, so prefill, chunks and decode steps equal one parallel forward."""
    torch.manual_seed(0)
    model = RustleLM(tiny(("swa", "lql"), lql_recent=16, lql_blocks=1)).eval()
    tokens = torch.randint(0, 97, (batch, 230))        # the last queries choose 1 of 3 older blocks
    with torch.inference_mode():
        whole = model(tokens)
        cache = model.new_cache(batch=batch)
        parts = [model(tokens[:, :150], cache), model(tokens[:, 150:200], cache)]
        parts += [model(tokens[:, t:t + 1], cache) for t in range(200, 230)]
        dense = RustleLM(tiny(("swa", "lql"), lql_blocks=0)).eval()
        dense.load_state_dict(model.state_dict())
        everything = dense(tokens)
    assert relative_error(whole, torch.cat(parts, dim=1)) < 1e-4
    assert relative_error(whole[:, :80], everything[:, :80]) < 1e-5      # up to 16 + 64 keys: all of them
    assert relative_error(whole[:, 200:], everything[:, 200:]) > 1e-3    # then a choice


def test_log_scaled_lql_queries_change_nothing_before_the_base_and_answer_the_same_warm_and_cold():
    """`lql_log_base`: queries past the base attend more sharply; prefill, chunks and steps still equal one forward,
    and a model without the scale loads into one with it (no weight changes)."""
    torch.manual_seed(0)
    plain = RustleLM(tiny(("swa", "lql"), lql_recent=16, lql_blocks=1)).eval()
    scaled = RustleLM(tiny(("swa", "lql"), lql_recent=16, lql_blocks=1, lql_log_base=8)).eval()
    assert start_weights(scaled, plain, graft=False, source="plain") == []
    tokens = torch.randint(0, 97, (1, 230))
    with torch.inference_mode():
        whole, before = scaled(tokens), plain(tokens)
        cache = scaled.new_cache()
        parts = [scaled(tokens[:, :150], cache)] + [scaled(tokens[:, t:t + 1], cache) for t in range(150, 230)]
    assert relative_error(whole, torch.cat(parts, dim=1)) < 1e-4
    assert relative_error(whole[:, :7], before[:, :7]) < 1e-6      # ln(p + 1) / ln 8 <= 1: unscaled
    assert relative_error(whole[:, 100:], before[:, 100:]) > 1e-3
    with pytest.raises(ValueError, match="lql_log_base"):
        tiny(("swa", "lql"), lql_log_base=1)


@pytest.mark.parametrize("token_key", [False, True])
def test_shifted_lql_keys_graft_onto_plain_ones_and_answer_the_same_warm_cold_and_on_a_branch(token_key):
    """`lql_shift`: keys [z_t, z_t-1] (token keys: [z_t, e_t-1]); grafted from plain keys it computes what they did,
    and once its previous-position half is read, prefill, a branch taken back and steps still equal one forward (the
    previous position's half from the cache)."""
    torch.manual_seed(0)
    plain = RustleLM(tiny(("swa", "lql"), lql_recent=16, lql_blocks=1)).eval()
    shifted = RustleLM(tiny(("swa", "lql"), lql_recent=16, lql_blocks=1, lql_shift=True,
                            lql_token_key=token_key)).eval()
    assert start_weights(shifted, plain, graft=True, source="plain") == []
    tokens, detour = torch.randint(0, 97, (1, 230)), torch.randint(0, 97, (1, 9))
    with torch.inference_mode():
        before = plain(tokens)
        assert relative_error(before, shifted(tokens)) < 1e-5
        for weight in (shifted.blocks[1].attn.query.weight, shifted.blocks[1].attn.up.weight):
            weight.add_(0.1 * torch.randn_like(weight))
        whole, cache = shifted(tokens), shifted.new_cache()
        parts = [shifted(tokens[:, :150], cache)]
        snap = cache.snapshot()
        shifted(detour, cache)
        cache.restore(snap)
        parts += [shifted(tokens[:, t:t + 1], cache) for t in range(150, 230)]
    assert relative_error(whole, torch.cat(parts, dim=1)) < 1e-4
    assert relative_error(whole, before) > 1e-3
    with pytest.raises(ValueError, match="shifts its keys"):
        start_weights(plain, shifted, graft=True, source="shifted")      # unshifting is not grafting
    with pytest.raises(ValueError, match="lql_shift"):
        tiny(lql_shift=1)
    other = RustleLM(tiny(("swa", "lql"), lql_shift=True, lql_token_key=not token_key))
    with pytest.raises(ValueError, match="shifts its keys"):            # z_t-1's weights do not read e_t-1
        start_weights(other, shifted, graft=True, source="shifted")
    with pytest.raises(ValueError, match="lql_token_key"):
        tiny(lql_token_key=True)


def test_new_weights_of_a_graft_are_its_untrained_slices_and_step_further():
    """graft.new_weights marks what the start did not have (token keys' new query and output slices and projection);
    NewWeightScale steps those k times as far as AdamW did and the trained weights exactly as far."""
    from assistant.lab.train.graft import new_weights
    from assistant.lab.train.loop import NewWeightScale

    torch.manual_seed(0)
    plain = RustleLM(tiny(("swa", "lql"))).eval()
    keyed = RustleLM(tiny(("swa", "lql"), lql_shift=True, lql_token_key=True))
    start_weights(keyed, plain, graft=True, source="plain")
    masks = new_weights(keyed, plain.config)
    d, h = keyed.config.lql_dim, keyed.config.lql_heads
    assert set(masks) == {"blocks.1.attn.query.weight", "blocks.1.attn.up.weight", "blocks.1.attn.token_down.weight"}
    query = masks["blocks.1.attn.query.weight"].view(h, 3 * d, -1)
    assert not query[:, :d].any() and query[:, d:].all()
    assert masks["blocks.1.attn.up.weight"].view(-1, h, 3 * d)[:, :, d:].all()
    assert masks["blocks.1.attn.token_down.weight"].all()

    def stepped(scale: float | None) -> dict[str, torch.Tensor]:
        model = RustleLM(keyed.config)
        model.load_state_dict(keyed.state_dict())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.loss(torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(1)),
                   torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(2))).backward()
        with NewWeightScale(model, masks, scale) if scale else torch.no_grad():
            optimizer.step()
        return {n: p.detach() - keyed.state_dict()[n] for n, p in model.named_parameters()}

    once, tenfold = stepped(None), stepped(10.0)
    for name, delta in once.items():
        mask = masks.get(name, torch.zeros_like(delta, dtype=torch.bool))
        assert torch.allclose(tenfold[name][~mask], delta[~mask], atol=1e-7)
        assert torch.allclose(tenfold[name][mask], 10 * delta[mask], atol=1e-6)
    assert float(once["blocks.1.attn.token_down.weight"].abs().sum()) > 0
