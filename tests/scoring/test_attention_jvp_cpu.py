"""The fused forward-mode attention kernel (scoring/attention_jvp.py) on CPU, run by Triton's
interpreter (TRITON_INTERPRET=1): the same kernel source a GPU compiles, checked against float64
forward-mode autograd, for plain causal rows and for packed pairs (scoring/packing.py's mask).
Skipped where Triton is not installed (it is a dev dependency on Linux x86-64)."""

from __future__ import annotations

import os

import pytest
import torch

from prefsift.scoring import influence as I
from prefsift.scoring.packing import pack_batches
from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs
from tests.conftest import TINY_PAIRS, build_tiny_model, build_tiny_tokenizer

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="TRITON_INTERPRET=1 before triton is imported (tests/conftest.py sets it without CUDA)",
)


@pytest.fixture
def A():
    from prefsift.scoring import attention_jvp

    return attention_jvp


H, HKV, D = 4, 2, 16


def reference(q, k, v, scale, mask):
    """Attention in plain ops (GQA by repeating K/V heads); `mask` (B, 1, T, T) bool or None."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    T = q.shape[2]
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    if mask is not None:
        allowed = allowed & (mask | torch.eye(T, dtype=torch.bool))
    s = ((q @ k.transpose(-1, -2)) * scale).masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.fixture(scope="module")
def toks():
    return tokenize_pairs(build_tiny_tokenizer(), TINY_PAIRS, TokenizeConfig(max_length=64))


def relerr(a, b):
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize("packed", [False, True])
def test_output_and_tangent_match_float64_jvp(A, toks, packed):
    """(O, dO) of the kernel == torch.func.jvp of the reference, float32 vs float64. Packed: two
    batches of pairs (rows of up to 160 tokens, T > one 64-key block); the rows' end padding
    attends to itself only."""
    batches = [b for _, b in pack_batches(toks, batch_tokens=512, row_tokens=160)]
    skips = 0
    for b in batches:
        mask = b["attention_mask"] if packed else None
        B, T = b["input_ids"].shape
        if packed:  # several key blocks, and a block of queries whose pairs start after the first
            first = mask[:, 0].to(torch.uint8).argmax(-1)
            skips += int(any(first[:, s : s + A.BLOCK_M].min() >= A.BLOCK_N for s in range(0, T, A.BLOCK_M)))
        g = torch.Generator().manual_seed(T)
        q, dq = (torch.randn(B, H, T, D, generator=g) for _ in range(2))
        k, v, dk, dv = (torch.randn(B, HKV, T, D, generator=g) for _ in range(4))
        o, do = A.attention_and_tangent(q, k, v, dq, dk, dv, D**-0.5, mask)
        ro, rdo = torch.func.jvp(
            lambda a, b_, c, mask=mask: reference(a, b_, c, D**-0.5, mask),
            (q.double(), k.double(), v.double()),
            (dq.double(), dk.double(), dv.double()),
        )
        assert torch.isfinite(do).all()
        assert relerr(o, ro) < 1e-5 and relerr(do, rdo) < 1e-5
    assert skips or not packed  # the kernel's skip of key blocks before a query block's pairs is exercised


def test_directional_logps_fused_equals_math_and_the_gradient_reference_on_packed_pairs(A, toks):
    """D_v log pi of every pair of packed batches on a LoRA-like tiny Llama: the fused kernel
    (what `auto` picks on CUDA for a packed batch) == the math SDPA kernel, float32, and the IF
    it gives == the per-pair autograd reference (float64 padded rows)."""
    import numpy as np

    from prefsift.scoring.logprobs import collate

    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok).float().eval()
    model.config._attn_implementation = "sdpa"
    logp_fn, params = I.make_logp_fn(model), I.select_params(model)
    gen = torch.Generator().manual_seed(0)
    v = {n: torch.randn(t.shape, generator=gen) for n, t in params.items()}
    n = 0
    for idx, b in pack_batches(toks, batch_tokens=512, row_tokens=160):
        f_m, d_m = I.directional_logps(logp_fn, params, v, b, attention="math")
        f_f, d_f = I.directional_logps(logp_fn, params, v, b, attention="fused")
        assert model.config._attn_implementation == "sdpa"  # restored
        torch.testing.assert_close(f_f, f_m, rtol=1e-5, atol=1e-4)
        assert relerr(d_f, d_m) < 1e-5
        n += len(idx)
    assert n == len(toks)
    # the fused directional derivatives against autograd gradients of the same log-probs
    sub = toks[:4]
    ((idx, b),) = pack_batches(sub, batch_tokens=10_000, row_tokens=10_000)
    _, d_f = I.directional_logps(logp_fn, params, v, b, attention="fused")
    padded = collate([t.chosen_seq() for t in sub] + [t.rejected_seq() for t in sub], tok.pad_token_id)
    _, d_g = I.directional_logps(logp_fn, params, v, padded, method="grad")
    order = torch.tensor(idx + [i + len(sub) for i in idx])
    got, want = torch.zeros(8, dtype=torch.float64), d_g.double()
    got[order] = d_f.double()
    assert np.corrcoef(got.numpy(), want.numpy())[0, 1] >= 0.99999
    assert relerr(got, want) < 1e-4


COMPILE = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from prefsift.scoring import attention_jvp as A

kernel = A._attn_jvp_kernel
ints = "scale T H GROUP sqb sqh sqt skb skh skt smb smq slb".split()
for masked in (True, False):
    for dt in ("fp32", "bf16"):
        const = dict(HEAD_DIM=64, HAS_MASK=masked, BLOCK_M=A.BLOCK_M, BLOCK_N=A.BLOCK_N, INTERPRET=False)
        sig = {n: "constexpr" if n in const else "fp32" if n == "scale" else "i32" if n in ints
               else "*u8" if n == "M" else "*i32" if n == "LO" else "*" + dt for n in kernel.arg_names}
        src = ASTSource(fn=kernel, signature=sig,
                        constexprs={(kernel.arg_names.index(n),): v for n, v in const.items()})
        ptx = triton.compile(src, target=GPUTarget("cuda", int(sys.argv[1]), 32)).asm["ptx"]
        assert ".entry _attn_jvp_kernel" in ptx
        print("compiled", masked, dt, len(ptx))
"""


@pytest.mark.parametrize("arch", [80, 90])
def test_the_kernel_compiles_for_a_gpu(tmp_path, arch):
    """The compiled path (a dynamic loop start the interpreter does not check) goes through Triton's
    compiler to PTX for an A100 / H100 target, with and without a mask, fp32 and bf16: no GPU needed."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compile, not a cached one
    out = subprocess.run(
        [sys.executable, "-c", COMPILE, str(arch)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("compiled") == 4
