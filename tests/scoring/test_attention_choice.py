"""Which attention the JVP uses: the fused kernel only where it computes exactly the model's
attention (CPU-only checks of the rules; the kernel itself is tested on a GPU in
test_attention_jvp.py)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, MistralConfig, Qwen2Config

from prefsift.scoring import attention_jvp as A
from prefsift.scoring import influence as I


def _cfg(cls=LlamaConfig, **kw):
    base = dict(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    cfg = cls(**{**base, **kw})
    cfg._attn_implementation = "sdpa"
    return cfg


def test_right_padded() -> None:
    assert A.right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not A.right_padded(torch.tensor([[0, 1, 1]]))  # left padding
    assert not A.right_padded(torch.tensor([[1, 0, 1]]))  # a hole


def test_model_supported_rules() -> None:
    assert A.model_supported(_cfg(), 4096)
    assert not A.model_supported(_cfg(num_attention_heads=3, hidden_size=72), 16)  # head dim 24
    assert not A.model_supported(None, 16)
    flex = _cfg()
    flex._attn_implementation = "flex_attention"
    assert not A.model_supported(flex, 16)
    # a sliding window only counts when it is shorter than the rows
    assert A.model_supported(_cfg(MistralConfig, sliding_window=4096), 1024)
    assert not A.model_supported(_cfg(MistralConfig, sliding_window=512), 1024)
    assert A.model_supported(_cfg(Qwen2Config, use_sliding_window=False, sliding_window=512), 1024)
    gpt2 = _cfg()
    gpt2.model_type = "gpt2"  # not a known plain-attention family
    assert not A.model_supported(gpt2, 16)


def test_cpu_jvp_takes_the_math_kernel_and_fused_without_a_model_is_refused() -> None:
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)}
    assert not A.supports(object(), batch)  # no CUDA here (or a CPU batch)

    def logp_fn(params, b):  # not made by make_logp_fn: carries no model
        return torch.zeros(2)

    with pytest.raises(I.InfluenceError, match="make_logp_fn"):
        I.jvp_attention(logp_fn, batch, "fused")
    with pytest.raises(I.InfluenceError, match="attention must be one of"):
        I.jvp_attention(logp_fn, batch, "flash")
    with I.jvp_attention(logp_fn, batch, "auto"):  # the math SDPA context
        pass
