"""Grafting (`assistant/lab/train/graft.py`): a start model's weights in a changed architecture. Swapped block
kinds start fresh and nothing else moves; a wider MLP, lql or residual stream computes what the narrow model did,
and its new weights learn."""
from dataclasses import replace

import pytest
import torch

from assistant.lab.train.graft import new_weights, start_weights
from model.model import RustleLM

from tiny_models import relative_error, tiny


def test_grafting_keeps_every_block_but_the_swapped_kinds_and_refuses_other_changes():
    config = tiny(("gdn", "swa", "lql"), lql_heads=1)
    start = RustleLM(config)
    swapped = replace(config, layer_pattern=("gdn", "swa", "full"))
    with pytest.raises(ValueError, match="graft = true"):
        start_weights(RustleLM(swapped), start, False, "shipped")
    with pytest.raises(ValueError, match="widens the residual stream, the MLP and lql"):
        start_weights(RustleLM(replace(swapped, n_heads=2 * config.n_heads)), start, True, "shipped")
    with pytest.raises(ValueError, match="widens the residual stream, the MLP and lql"):
        start_weights(RustleLM(replace(config, mlp_hidden=32)), start, True, "shipped")
    model = RustleLM(swapped)
    assert start_weights(model, start, True, "shipped") == [2]
    before, after = start.state_dict(), model.state_dict()
    for name, tensor in after.items():
        if name.startswith("blocks.2.attn."):
            assert name not in before or not torch.equal(tensor, before[name])
        else:
            assert torch.equal(tensor, before[name]), name
    assert start_weights(RustleLM(config), start, False, "shipped") == []


def test_a_widened_mlp_computes_what_the_narrow_model_did_and_its_new_units_learn():
    torch.manual_seed(0)
    config = tiny(("gdn", "swa", "lql"), lql_heads=1)
    start, wide = RustleLM(config), RustleLM(replace(config, mlp_hidden=96))
    assert start_weights(wide, start, True, "shipped") == []
    tokens = torch.randint(0, config.vocab_size, (2, 40))
    torch.testing.assert_close(wide(tokens), start(tokens))
    gate_up = wide.blocks[0].mlp.gate_up.weight
    assert torch.equal(gate_up[:64], start.blocks[0].mlp.gate_up.weight[:64])
    assert torch.equal(gate_up[96:160], start.blocks[0].mlp.gate_up.weight[64:])
    assert gate_up[64:96].abs().sum() > 0                          # new units: a fresh (random) gate and up
    wide.loss(tokens[:, :-1], tokens[:, 1:]).backward()
    assert wide.blocks[0].mlp.down.weight.grad[:, 64:].abs().sum() > 0    # silent, not dead


def test_a_widened_lql_computes_what_the_narrow_model_did_and_its_new_heads_learn():
    torch.manual_seed(0)
    config = tiny(("gdn", "swa", "lql"), lql_heads=1)      # its lql is block 2
    start = RustleLM(config)
    wide = RustleLM(replace(config, lql_dim=2 * config.lql_dim, lql_heads=2 * config.lql_heads))
    assert start_weights(wide, start, True, "shipped") == []
    tokens = torch.randint(0, config.vocab_size, (2, 40))
    torch.testing.assert_close(wide(tokens), start(tokens))
    d, h = config.lql_dim, config.lql_heads
    attn = wide.blocks[2].attn
    assert torch.equal(attn.down.weight[:d], start.blocks[2].attn.down.weight)
    assert attn.down.weight[d:].abs().sum() > 0                    # new latent dims: a fresh down-projection
    assert attn.up.weight.view(-1, 2 * h, 2 * d)[:, :, d:].abs().sum() == 0
    wide.loss(tokens[:, :-1], tokens[:, 1:]).backward()
    assert attn.up.weight.grad.view(-1, 2 * h, 2 * d)[:, h:].abs().sum() > 0     # new heads: silent, not dead
    with pytest.raises(ValueError, match="widens the residual stream, the MLP and lql"):
        start_weights(start, wide, True, "shipped")                 # narrowing is not grafting
    with pytest.raises(ValueError, match="global_rope"):
        start_weights(RustleLM(replace(wide.config, global_rope=True)), RustleLM(replace(config, global_rope=True)),
                      True, "shipped")


@pytest.mark.parametrize("lql", [dict(lql_shift=True), dict(lql_dim=32, lql_heads=4)])
def test_a_wider_residual_stream_computes_what_the_narrow_model_did_and_its_new_dims_learn(lql):
    """d_model grown (with the MLP; with lql's shifted keys, or with lql widened too): the same logits, prefill and
    decode steps alike; the stream's new dims start at zero and are marked new, the norms' trained weights scaled,
    and one step moves the new dims."""
    torch.manual_seed(0)
    config = tiny(("gdn", "swa", "lql", "full"), lql_shift=lql.get("lql_shift", False))
    start = RustleLM(config).eval()
    for p in start.parameters():                                   # trained-looking norms: not all ones
        p.data.add_(0.05 * torch.randn_like(p))
    grown = RustleLM(replace(config, d_model=48, mlp_hidden=96, **lql)).eval()
    assert start_weights(grown, start, True, "shipped") == []
    tokens = torch.randint(0, config.vocab_size, (1, 60))
    with torch.inference_mode():
        before, after = start(tokens), grown(tokens)
        cache = grown.new_cache()
        steps = [grown(tokens[:, :50], cache)] + [grown(tokens[:, t:t + 1], cache) for t in range(50, 60)]
    # equal but for the norms' eps, which the zeros make a little larger against the mean square
    assert relative_error(before, after) < 1e-3 and relative_error(before, torch.cat(steps, 1)) < 1e-3
    assert grown.embed.weight[:, 32:].abs().sum() == 0 and grown.blocks[0].attn.out.weight[32:].abs().sum() == 0
    assert grown.blocks[1].attn.qkv.weight[:, 32:].abs().sum() > 0      # reads the new dims: fresh columns
    torch.testing.assert_close(grown.norm.weight[:32], start.norm.weight * (32 / 48) ** 0.5)
    masks = new_weights(grown, config)
    assert masks["embed.weight"][:, 32:].all() and not masks["embed.weight"][:, :32].any()
    assert masks["blocks.3.attn.qkv.weight"][:, 32:].all() and not masks["blocks.3.attn.qkv.weight"][:, :32].any()
    assert masks["blocks.0.mlp_norm.weight"][32:].all() and not masks["blocks.0.mlp_norm.weight"][:32].any()
    grown.train()
    grown.loss(tokens[:, :-1], tokens[:, 1:]).backward()
    assert grown.blocks[2].mlp.down.weight.grad[32:].abs().sum() > 0     # silent, not dead
    assert grown.embed.weight.grad[:, 32:].abs().sum() > 0
    with pytest.raises(ValueError, match="widens the residual stream"):
        start_weights(start, grown, True, "shipped")                    # narrowing is not grafting
