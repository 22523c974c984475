"""Exact influence by directional derivatives vs explicit per-pair autograd gradients (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prefsift.scoring import influence as I
from prefsift.scoring.logprobs import collate
from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs
from tests.conftest import TINY_PAIRS, build_tiny_model, build_tiny_tokenizer
from tests.influence_reference import batch_influence, pair_gradient_influence

BETA = 0.1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are overhead-bound: one thread is ~20x faster than two on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def toks(tok):
    return tokenize_pairs(tok, TINY_PAIRS, TokenizeConfig(max_length=64))


def pair_batch(tok, sub):
    return collate([t.chosen_seq() for t in sub] + [t.rejected_seq() for t in sub], tok.pad_token_id)


def make_model(tok, dtype=torch.float64, attn="eager", seed=0):
    model = build_tiny_model(tok, seed=seed)
    model.config._attn_implementation = attn
    return model.to(dtype).eval()


N_TRAIN = 4  # pairs 0..3 get IF; pairs 6..7 are the validation set


def val_setup(tok, toks, logp_fn, params):
    """The validation batch and a reference that differs from theta (fixed random offsets)."""
    gen = torch.Generator().manual_seed(2)
    vb = pair_batch(tok, toks[6:])
    with torch.no_grad():
        noise = torch.randn(4, generator=gen, dtype=torch.float64)
        vc, vr = I.split_pairs(logp_fn(params, vb).double() + noise)
    return vb, vc, vr


def setup(tok, toks, model):
    """(logp_fn, params, g_val, train batch, ref_c, ref_r) with a reference that differs from theta."""
    params = I.select_params(model)
    logp_fn = I.make_logp_fn(model)
    gen = torch.Generator().manual_seed(1)
    train = pair_batch(tok, toks[:N_TRAIN])
    with torch.no_grad():
        noise = torch.randn(2 * N_TRAIN, generator=gen, dtype=torch.float64)
        ref_c, ref_r = I.split_pairs(logp_fn(params, train).double() + noise)
    vb, vc, vr = val_setup(tok, toks, logp_fn, params)
    g, _ = I.validation_gradient(logp_fn, params, [(vb, vc, vr)], 2, BETA)
    return logp_fn, params, g, train, ref_c, ref_r


@pytest.fixture(scope="module")
def eager64(tok, toks):
    """The float64 eager setup and its per-pair autograd reference, computed once."""
    model = make_model(tok)
    logp_fn, params, g, train, ref_c, ref_r = setup(tok, toks, model)
    ref = pair_gradient_influence(logp_fn, params, g, train, ref_c, ref_r, BETA)
    return model, logp_fn, params, g, train, ref_c, ref_r, ref


def relerr(a, b):
    return float((a - b).norm() / b.norm())


def test_jvp_equals_per_pair_gradients_float64(eager64):
    model, logp_fn, params, g, train, ref_c, ref_r, ref = eager64
    out = batch_influence(logp_fn, params, g, train, ref_c, ref_r, BETA, method="jvp")
    assert ref.abs().min() > 0  # a real comparison: no influence is trivially zero
    assert relerr(out["if"], ref) < 1e-6
    # The per-sequence-gradient method agrees with the per-pair reference too.
    grad = batch_influence(logp_fn, params, g, train, ref_c, ref_r, BETA, method="grad")
    assert relerr(grad["if"], ref) < 1e-6  # eager softmax runs in float32
    # The primal of the JVP is the plain sequence log-prob.
    with torch.no_grad():
        plain = logp_fn(params, train).double()
    torch.testing.assert_close(torch.cat([out["policy_chosen"], out["policy_rejected"]]), plain)


def test_jvp_with_sdpa_math_backend_float64(tok, toks, eager64):
    """SDPA (forced to the math kernel under forward AD) gives the same IF as eager attention."""
    *_, train, ref_c, ref_r, ref = eager64
    model = make_model(tok, attn="sdpa")
    logp_fn, params, g, train, ref_c, ref_r = setup(tok, toks, model)
    out = batch_influence(logp_fn, params, g, train, ref_c, ref_r, BETA, method="jvp")
    assert relerr(out["if"], ref) < 1e-6


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_pairs_gval_and_jvp_equal_the_per_pair_gradient_reference_float64(tok, toks, attn):
    """IF on the packed path (each pair one sequence, several pairs a row): g_val by a backward
    through packed validation pairs, D_v by a forward-mode pass through packed training pairs, both
    against the padded layout and per-pair autograd gradients of the DPO loss."""
    import numpy as np

    from prefsift.scoring.packing import pack_batches

    model = make_model(tok, attn=attn)
    logp_fn, params, g, train, ref_c, ref_r = setup(tok, toks, model)  # g_val from padded rows
    ref = pair_gradient_influence(logp_fn, params, g, train, ref_c, ref_r, BETA)
    # 1. g_val from packed validation pairs, 2 pairs in one row
    vb, vc, vr = val_setup(tok, toks, logp_fn, params)
    ((vidx, vpacked),) = pack_batches(toks[6:], batch_tokens=10_000, row_tokens=10_000)
    assert vpacked["input_ids"].shape[0] == 1 and len(vidx) == 2
    g_packed, _ = I.validation_gradient(logp_fn, params, [(vpacked, vc[vidx], vr[vidx])], 2, BETA)
    # Llama's RMSNorm runs in float32 even in a float64 model: a backward's last bits differ by
    # layout at about 1e-8 (the forward's do not: test_logprobs' packed == padded < 1e-9)
    assert max(relerr(g_packed[k].double(), g[k].double()) for k in g) < 1e-6
    # 2. the JVP over packed training pairs (several batches, several pairs a row)
    got = torch.zeros(N_TRAIN, dtype=torch.float64)
    batches = list(pack_batches(toks[:N_TRAIN], batch_tokens=64, row_tokens=64))
    assert len(batches) > 1 and any(b["input_ids"].shape[0] < len(idx) for idx, b in batches)
    for idx, b in batches:
        out = batch_influence(logp_fn, params, g_packed, b, ref_c[idx], ref_r[idx], BETA, method="jvp")
        got[idx] = out["if"]
    assert ref.abs().min() > 0
    assert np.corrcoef(got.numpy(), ref.numpy())[0, 1] >= 0.999999
    assert relerr(got, ref) < 1e-6
    with pytest.raises(I.InfluenceError, match="padded batches"):  # the row-slicing reference
        batch_influence(logp_fn, params, g, batches[0][1], ref_c, ref_r, BETA, method="grad")


def test_finite_differences_float32_vs_float64_reference(tok, eager64):
    _, logp_fn, params, g, train, ref_c, ref_r, ref = eager64
    model32 = make_model(tok, dtype=torch.float32)
    p32 = I.select_params(model32)
    g32 = {k: t.float() for k, t in g.items()}
    out = batch_influence(I.make_logp_fn(model32), p32, g32, train, ref_c, ref_r, BETA, method="fd")
    assert relerr(out["if"], ref) < 1e-3


def test_lora_adapter_params_only(tok, toks):
    from peft import LoraConfig, get_peft_model

    base = make_model(tok)
    model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    model = model.double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # LoRA starts at B = 0: make theta differ from the base
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(hash(name) % 1000))
    logp_fn, params, g, train, ref_c, ref_r = setup(tok, toks, model)
    assert params and all("lora_" in n for n in params)
    assert sum(t.numel() for t in params.values()) < sum(p.numel() for p in model.parameters()) / 5
    ref = pair_gradient_influence(logp_fn, params, g, train, ref_c, ref_r, BETA)
    out = batch_influence(logp_fn, params, g, train, ref_c, ref_r, BETA, method="jvp")
    assert relerr(out["if"], ref) < 1e-6
    # Only the adapters moved: the base weights keep their values and get no tangent/grad.
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_validation_gradient_accumulates_the_mean_loss(tok, toks):
    model = make_model(tok)
    params = I.select_params(model, regex=r"layers\.1\.")
    assert params and all("layers.1." in n for n in params)
    logp_fn = I.make_logp_fn(model)
    b_all = pair_batch(tok, toks[:4])
    with torch.no_grad():
        rc, rr = I.split_pairs(logp_fn(params, b_all).double() - 0.5 * torch.arange(8, dtype=torch.float64))
    parts = [(pair_batch(tok, toks[:3]), rc[:3], rr[:3]), (pair_batch(tok, toks[3:4]), rc[3:], rr[3:])]
    g, loss = I.validation_gradient(logp_fn, params, parts, 4, BETA)
    # Reference: one autograd pass over the mean loss of all four pairs at once.
    p = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    pc, pr = I.split_pairs(logp_fn(p, b_all))
    full = F.softplus(-I.dpo_margin(pc, pr, rc, rr, BETA)).mean()
    ref = torch.autograd.grad(full, list(p.values()))
    for (name, gr), r in zip(g.items(), ref):
        torch.testing.assert_close(gr, r, rtol=1e-6, atol=1e-9, msg=name)  # float32 eager softmax
    assert loss == pytest.approx(float(full.detach()), rel=1e-9)
    with pytest.raises(I.InfluenceError, match="expected 5"):
        I.validation_gradient(logp_fn, params, parts, 5, BETA)


def test_influence_predicts_the_validation_loss_change(tok, toks, eager64):
    """IF's sign and scale: one small SGD step on pair d changes L_val by about -eta * IF(d)."""
    _, logp_fn, params, g, train, ref_c, ref_r, ref = eager64
    vb, vc, vr = val_setup(tok, toks, logp_fn, params)

    def val_loss(p):
        pc, pr = I.split_pairs(logp_fn(p, vb))
        return F.softplus(-I.dpo_margin(pc, pr, vc, vr, BETA)).mean()

    eta = 1e-3
    for i in range(2):
        p = {k: t.clone().requires_grad_(True) for k, t in params.items()}
        lp = logp_fn(p, I._rows(train, [i, N_TRAIN + i]))
        loss_d = F.softplus(-I.dpo_margin(lp[0], lp[1], ref_c[i], ref_r[i], BETA))
        grads = dict(zip(p, torch.autograd.grad(loss_d, list(p.values()))))
        with torch.no_grad():
            delta = val_loss({k: t - eta * grads[k] for k, t in params.items()}) - val_loss(params)
        assert float(delta) == pytest.approx(-eta * float(ref[i]), rel=1e-2)


def test_jvp_falls_back_to_fd_without_forward_ad(tok, toks):
    class NoForwardAD(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 1.0

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return grad

    model = make_model(tok, dtype=torch.float32)
    params = I.select_params(model)
    inner = I.make_logp_fn(model)
    logp_fn = lambda p, b: NoForwardAD.apply(inner(p, b))  # noqa: E731
    v = {k: torch.randn_like(t) for k, t in params.items()}
    batches = [([0, 1], pair_batch(tok, toks[:1])), ([2, 3], pair_batch(tok, toks[1:2]))]
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises, it is not swallowed silently...
        list(I.stream_directional(logp_fn, params, v, batches, method="jvp", fallback=False))
    used = [m for *_, m in I.stream_directional(logp_fn, params, v, batches, method="jvp")]
    assert used == ["fd", "fd"]  # ...and with fallback on, every batch is done by fd and says so


def test_select_params_errors_and_zero_query(tok):
    model = make_model(tok)
    with pytest.raises(I.InfluenceError, match="no parameters"):
        I.select_params(model, regex="does-not-exist")
    params = I.select_params(model, regex="norm")
    with pytest.raises(I.InfluenceError, match="zero"):
        I.fd_step(params, {k: torch.zeros_like(t) for k, t in params.items()})
    with pytest.raises(I.InfluenceError, match="method"):
        I.directional_logps(I.make_logp_fn(model), params, params, {}, method="nope")


def test_hvp_and_damped_cg_against_the_explicit_hessian(tok, toks):
    """--precondition cg: H u by double backward, and CG's (H + lambda I)^-1 g vs a dense solve."""
    model = make_model(tok)
    params = I.select_params(model, regex=r"layers\.1\.input_layernorm")  # 64 parameters
    ((name, theta),) = params.items()
    logp_fn = I.make_logp_fn(model)
    vb, vc, vr = val_setup(tok, toks, logp_fn, params)
    batches = [(vb, vc, vr)]
    g, _ = I.validation_gradient(logp_fn, params, batches, 2, BETA)

    def val_loss(flat):
        pc, pr = I.split_pairs(logp_fn({name: flat}, vb))
        return F.softplus(-I.dpo_margin(pc, pr, vc, vr, BETA)).mean()

    H = torch.autograd.functional.hessian(val_loss, theta.clone())  # (64, 64)
    hvp = I.validation_hvp(logp_fn, params, batches, 2, BETA)
    u = torch.randn(theta.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(hvp({name: u})[name], H @ u, rtol=1e-6, atol=1e-10)
    lam = float(torch.linalg.eigvalsh(H).min().clamp(max=0).abs()) + 0.05  # makes H + lam I positive definite
    x, info = I.damped_cg(hvp, g, lam, iters=200, tol=1e-10)
    expect = torch.linalg.solve(H + lam * torch.eye(H.shape[0], dtype=H.dtype), g[name])
    assert info["stopped"] == "converged"
    assert relerr(x[name], expect) < 1e-6
    with pytest.raises(I.InfluenceError):
        I.damped_cg(hvp, g, -1.0, iters=3)


def _mm_calls(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm"))


def test_frozen_linear_jvp_skips_the_zero_weight_tangent():
    """torch's forward AD of a linear with a tangent-less weight runs a third, wasted matmul
    (x @ 0); under `tangent_linears` the JVP is one primal and one tangent matmul, same numbers."""
    import torch.autograd.forward_ad as fwAD

    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(16, 24, dtype=torch.float64).requires_grad_(False)
    x, dx = (torch.randn(5, 7, 16, dtype=torch.float64, generator=gen) for _ in range(2))

    def jvp():
        with torch.no_grad(), fwAD.dual_level():
            return fwAD.unpack_dual(lin(fwAD.make_dual(x, dx)))

    plain_calls = _mm_calls(jvp)
    plain = jvp()
    with I.tangent_linears(lin) as n:
        assert n == 1
        routed_calls = _mm_calls(jvp)
        routed = jvp()
    assert "forward" not in lin.__dict__  # restored on exit
    assert (plain_calls, routed_calls) == (3, 2)
    torch.testing.assert_close(routed.primal, lin(x), rtol=0, atol=0)
    torch.testing.assert_close(routed.tangent, dx @ lin.weight.T, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(routed.tangent, plain.tangent, rtol=1e-15, atol=1e-15)
    # Reverse mode through it (not used by prefsift, but not wrong either): the input's gradient.
    xr = x[:2, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: I._FrozenLinear.apply(t, (lin.weight, lin.bias)), (xr,))


def test_jvp_with_some_linears_frozen_float64(tok, toks):
    """A parameter subset (the MLPs): frozen attention linears take the routed rule, the MLP
    linears (weights with tangents) torch's own; IF still equals the per-pair reference."""
    model = make_model(tok)
    params = I.select_params(model, r"mlp\.")
    assert params and all(".mlp." in n for n in params)
    logp_fn = I.make_logp_fn(model)
    gen = torch.Generator().manual_seed(1)
    train = pair_batch(tok, toks[:N_TRAIN])
    with torch.no_grad():
        ref_c, ref_r = I.split_pairs(
            logp_fn(params, train).double() + torch.randn(2 * N_TRAIN, generator=gen)
        )
    vb, vc, vr = val_setup(tok, toks, logp_fn, params)
    g, _ = I.validation_gradient(logp_fn, params, [(vb, vc, vr)], 2, BETA)
    ref = pair_gradient_influence(logp_fn, params, g, train, ref_c, ref_r, BETA)
    out = batch_influence(logp_fn, params, g, train, ref_c, ref_r, BETA, method="jvp")
    assert ref.abs().min() > 0 and relerr(out["if"], ref) < 1e-6
