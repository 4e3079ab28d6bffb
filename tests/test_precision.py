"""The model's serving precision: fp16 copies of the weights for a few rows and bf16 ones for many
(model/serving.py), the dtype and memory layouts chosen for this CPU (model/precision.py)."""
import copy

import pytest
import torch

from model import precision
from model.model import RustleLM
from model.serving import FewRowsBlock, FewRowsRMSNorm, HalfWeightLinear, half_weights
from tiny_models import relative_error, tiny


def test_half_weights_serve_a_few_rows_from_fp16_and_more_rows_as_before():
    torch.manual_seed(7)
    model = RustleLM(tiny()).eval()
    served = half_weights(copy.deepcopy(model))
    assert isinstance(served.head, HalfWeightLinear) and served.head.weight is served.embed.weight
    assert all(type(b) is FewRowsBlock for b in served.blocks) and type(served.norm) is FewRowsRMSNorm
    tokens = torch.randint(0, 97, (1, 40))
    with torch.inference_mode():
        assert torch.equal(model(tokens), served(tokens))                # 40 rows: the fp32 weights, unchanged
        caches = [model.new_cache(), served.new_cache()]
        model(tokens, caches[0]), served(tokens, caches[1])
        step = torch.tensor([[5]])
        expected, got = model(step, caches[0]), served(step, caches[1])  # one row: the fp16 copies
    assert not torch.equal(expected, got) and relative_error(expected, got) < 1e-2


def test_many_rows_multiply_in_bf16_where_asked_a_few_rows_and_training_as_before():
    torch.manual_seed(7)
    model = RustleLM(tiny()).eval()
    plain, wide = half_weights(copy.deepcopy(model)), half_weights(copy.deepcopy(model), rows=torch.bfloat16)
    tokens = torch.randint(0, 97, (1, 40))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        trained_as = model(tokens).float()                               # training's autocast: linears in bf16
    with torch.inference_mode():
        expected, got = plain(tokens), wide(tokens)                      # 40 rows: fp32 weights / bf16 copies
        caches = [plain.new_cache(), wide.new_cache()]
        plain(tokens, caches[0]), wide(tokens, caches[1])
        step = torch.tensor([[5]])
        one_row = [plain(step, caches[0]), wide(step, caches[1])]        # one row: the fp16 copies in both
    assert got.dtype == torch.float32 and not torch.equal(expected, got)
    assert relative_error(trained_as, got) < 2e-2 and relative_error(expected, got) < 3e-2
    assert relative_error(*one_row) < 3e-2
    wide.train()
    wide(tokens).logsumexp(-1).sum().backward()                         # autograd takes the fp32 weights
    assert wide.blocks[0].mlp.down.weight.grad is not None


def test_fast_layouts_move_strides_not_values():
    torch.manual_seed(0)
    model = RustleLM(tiny())
    tokens = torch.randint(0, 97, (1, 24))
    with torch.inference_mode():
        expected = model(tokens)
        precision.fast_layouts(model)
        cache = model.new_cache()
        got = torch.cat([model(tokens[:, :20], cache), *(model(tokens[:, i:i + 1], cache) for i in range(20, 24))], 1)
    wide = model.blocks[0].mlp.gate_up.weight                   # 2 * hidden outputs from d_model inputs
    assert wide.stride() == (1, wide.shape[0]) and model.blocks[0].mlp.down.weight.is_contiguous()
    assert relative_error(expected, got) < 1e-5


def test_the_serving_dtype_follows_the_choice_and_auto_is_one_of_the_two(monkeypatch):
    assert precision.fast_dtype("bf16") == torch.bfloat16 and precision.fast_dtype("fp32") == torch.float32
    assert precision.fast_dtype("auto", device="cuda") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)   # e.g. AMD Zen 3: bf16 matmuls are emulated
    assert precision.fast_dtype("auto") == torch.float32
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)    # native bf16: fp32 still, where the C forward
    monkeypatch.setattr(precision, "decode_kernel_built", lambda: True)   # serves decode (fp32 only)
    assert precision.fast_dtype("auto") == torch.float32
    monkeypatch.setattr(precision, "decode_kernel_built", lambda: False)  # no compiler: PyTorch's bf16 is faster
    assert precision.fast_dtype("auto") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        precision.fast_dtype("fp8")


def test_many_rows_go_bf16_only_for_auto_in_fp32_on_a_cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "decode_kernel_built", lambda: True)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.rows_dtype("auto") == torch.bfloat16 and precision.fast_dtype("auto") == torch.float32
    assert precision.rows_dtype("fp32") == torch.float32 and precision.rows_dtype("bf16") == torch.bfloat16
    assert precision.rows_dtype("auto", device="cuda") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.rows_dtype("auto") == torch.float32
