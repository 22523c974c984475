"""The fused forward-mode attention (scoring/attention_jvp.py) against float64 autograd.

Needs Triton and a CUDA device (CPU-only torch builds have no Triton): skipped elsewhere, run on
a GPU box with `pytest -p no:cacheprovider --noconftest tests/scoring/test_attention_jvp.py`
(self-contained: no fixture from conftest). The kernel's maths was also checked on CPU with
Triton's interpreter (TRITON_INTERPRET=1): relative error 1e-7 in float32.
"""

from __future__ import annotations

import pytest
import torch

from prefsift.scoring import attention_jvp as A

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (A.triton is not None and torch.cuda.is_available()), reason="needs Triton and a CUDA device"
    ),
]


def _reference(q, k, v, scale):
    """Causal attention in plain ops (GQA by repeating K/V heads)."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-2), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize(
    ("B", "H", "Hkv", "T", "D"), [(2, 4, 2, 70, 16), (1, 8, 8, 200, 64), (3, 6, 2, 129, 32)]
)
def test_output_and_tangent_match_float64_jvp(B, H, Hkv, T, D, dtype, tol):
    g = torch.Generator(device="cuda").manual_seed(B * 1000 + T)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    q, k, v = r(B, H, T, D), r(B, Hkv, T, D), r(B, Hkv, T, D)
    dq, dk, dv = r(B, H, T, D), r(B, Hkv, T, D), r(B, Hkv, T, D)
    scale = D**-0.5
    o, do = A.attention_and_tangent(*(x.to(dtype) for x in (q, k, v, dq, dk, dv)), scale)
    ro, rdo = torch.func.jvp(
        lambda a, b, c: _reference(a, b, c, scale),
        (q.double(), k.double(), v.double()),
        (dq.double(), dk.double(), dv.double()),
    )
    assert torch.isfinite(do).all()
    # float32 inputs go through tf32 matrix units in the kernel's dots: ~1e-3
    assert float((o.double() - ro).norm() / ro.norm()) < tol
    assert float((do.double() - rdo).norm() / rdo.norm()) < tol


def test_directional_logps_fused_equals_math_on_a_lora_llama():
    """D_v log pi for every row of a right-padded batch: fused kernel vs math SDPA, float32."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefsift.scoring import influence as I

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    base = LlamaForCausalLM(cfg).to("cuda").eval()
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    lengths = [90, 77, 64, 30]
    T = max(lengths)
    ids = torch.randint(0, 128, (4, T), device="cuda")
    attn = (torch.arange(T, device="cuda")[None] < torch.tensor(lengths, device="cuda")[:, None]).long()
    comp = attn.bool() & (torch.arange(T, device="cuda")[None] >= 10)
    batch = {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}
    logp_fn = I.make_logp_fn(model)
    params = I.select_params(model)
    v = {n: torch.randn_like(t) for n, t in params.items()}
    assert A.supports(model, batch)
    torch.backends.cuda.matmul.allow_tf32 = False
    f_m, d_m = I.directional_logps(logp_fn, params, v, batch, attention="math")
    f_f, d_f = I.directional_logps(logp_fn, params, v, batch, attention="fused")
    assert model.config._attn_implementation != A.NAME  # restored
    assert torch.allclose(f_f, f_m, rtol=1e-4, atol=1e-3)
    assert float((d_f - d_m).norm() / d_m.norm()) < 5e-3  # tf32 dots in the kernel
    # left padding is not supported: auto falls back to math
    left = {k: t.flip(1) for k, t in batch.items()}
    assert not A.supports(model, left)
