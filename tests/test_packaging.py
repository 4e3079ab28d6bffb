"""The layout as a user meets it: the console script, and our `kernels` beside Hugging Face's imports."""
import torch


def test_help_lists_the_commands(rustle):
    out = rustle("--help").stdout
    for command in ("corpus", "tokenizer", "bench"):
        assert command in out


def test_transformers_imports_next_to_our_kernels_package():
    import kernels
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils.import_utils import is_kernels_available

    assert "Triton" in kernels.__doc__  # ours, not the Hub's `kernels` distribution
    assert not is_kernels_available()  # transformers must not mistake ours for the Hub's
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    logits = LlamaForCausalLM(config)(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 64) and transformers.__version__
