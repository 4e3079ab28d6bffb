"""A Hugging Face Llama / Qwen2 checkpoint converts to a RustleLM that computes the same logits."""
import pytest
import torch

from model.convert import from_hf, is_hf_checkpoint


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_converted_checkpoint_gives_the_same_logits(tmp_path, family):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    sizes = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False)
    hf = (LlamaForCausalLM(LlamaConfig(**sizes)) if family == "llama" else Qwen2ForCausalLM(Qwen2Config(**sizes)))
    hf.eval().save_pretrained(tmp_path, safe_serialization=True)
    assert is_hf_checkpoint(tmp_path)
    ours = from_hf(tmp_path)
    tokens = torch.randint(0, 101, (2, 17))
    with torch.no_grad():
        expected = hf(tokens).logits
        got = ours(tokens)
    assert float((expected - got).abs().max() / expected.abs().max()) < 1e-4


def test_other_architectures_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    assert not is_hf_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="not one of"):
        from_hf(tmp_path)
