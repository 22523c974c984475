"""Exact influence of each training pair on the validation DPO loss, by directional derivatives.

IF(d) = <v, grad l(theta; d)> with ONE fixed query vector v (g_val, or a preconditioned g_val).
That is a directional derivative of the pair's loss along v, so no per-pair gradient is needed:

    IF(d) = -beta * sigmoid(-m(d)) * (D_v log pi(y_w|x) - D_v log pi(y_l|x))

where D_v log pi(y|x) is the derivative of the sequence log-prob along v (see docs/METHOD.md).
Three interchangeable ways to get D_v, all batched over pairs:
  jvp   forward-mode AD (dual tensors through functional_call), exact, primal for free
  fd    central finite difference in the model's dtype, two forwards, no AD at all
  grad  explicit per-sequence gradients by autograd dotted with v (the slow reference)

Everything here is generic over a `logp_fn(params, batch) -> (2k,)` (sequence log-probs of
k chosen rows followed by k rejected rows) so the maths does not depend on a model family;
`make_logp_fn` builds one for Hugging Face causal LMs and PEFT models.

Batch layouts (both give outputs [chosen of k pairs; rejected of them], see
`scoring.logprobs.pair_batches`):
  padded (`scoring.logprobs.collate`): input_ids (2k, T) long, attention_mask (2k, T),
  completion_mask (2k, T) bool, True on the completion's tokens (token t is predicted by the
  logits at position t - 1);
  packed (`scoring.packing.pack`): each pair one sequence, several pairs a row. jvp and fd take
  either; the per-sequence gradient reference (`grad`) slices rows, so it takes padded batches.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor

from prefsift.scoring.errors import ScoringError
from prefsift.scoring.logprobs import sequence_logps

log = logging.getLogger(__name__)

Params = dict[str, Tensor]
Batch = Mapping[str, Tensor]
LogpFn = Callable[[Params, Batch], Tensor]

METHODS = ("jvp", "fd", "grad")
DEFAULT_FD_REL_STEP = (
    1e-3  # ||h v|| / ||theta_sel||: float32 rounding vs curvature, measured best on tiny Llamas
)


class InfluenceError(ScoringError):
    """Influence cannot be computed as asked (no parameters selected, AD unsupported...)."""


# ---------------------------------------------------------------- parameters
def select_params(model: torch.nn.Module, regex: str | None = None) -> Params:
    """The parameters influence is taken over, by name in `model.named_parameters()` (detached).

    A PEFT model: its adapter weights (names with 'lora_'). Otherwise every parameter.
    `regex` (re.search on the name) narrows either set.
    """
    peft = hasattr(model, "peft_config")
    pattern = re.compile(regex) if regex else None
    out: Params = {}
    for name, p in model.named_parameters():
        if peft and "lora_" not in name:
            continue
        if pattern is not None and not pattern.search(name):
            continue
        out[name] = p.detach()
    if not out:
        what = f"matching --params {regex!r}" if regex else "to take influence over"
        raise InfluenceError(f"no parameters {what} ({'adapter' if peft else 'model'} parameters searched)")
    return out


def flat_norm(tensors: Mapping[str, Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors.values()))


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """<a, b> over matching names, accumulated in float64."""
    return sum((a[k].double() * b[k].double()).sum() for k in a)


# ---------------------------------------------------------------- sequence log-probs
def make_logp_fn(model: torch.nn.Module) -> LogpFn:
    """`logp_fn(params, batch) -> (B,)` for a HF causal LM or PeftModel, by the scoring engine's
    own `sequence_logps` (so IF's margins equal IRM's): it is torch.func-safe and applies the LM
    head only where a completion token is predicted. `params` are named as in
    `model.named_parameters()`; parameters not given keep their values."""

    def logp_fn(params: Params, batch: Batch) -> Tensor:
        return sequence_logps(model, batch, params=params)

    logp_fn.model = model  # lets the JVP pick the fused attention kernel for this model
    return logp_fn


@contextlib.contextmanager
def forward_ad_attention() -> Iterable[None]:
    """The CPU flash/efficient SDPA kernels have no forward AD: force the math backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


ATTENTION = ("auto", "fused", "math")


def jvp_attention(logp_fn: LogpFn, batch: Batch, attention: str = "auto"):
    """The attention for a forward-mode pass: the fused Triton kernel (scoring.attention_jvp) on
    CUDA where it applies ("auto") or when asked ("fused"), else the math SDPA kernel."""
    from prefsift.scoring import attention_jvp

    model = getattr(logp_fn, "model", None)
    if attention == "fused" or (
        attention == "auto" and model is not None and attention_jvp.supports(model, batch)
    ):
        if model is None:
            raise InfluenceError("the fused attention needs a logp_fn from make_logp_fn(model)")
        log.debug("JVP attention: fused Triton kernel (%s)", attention_jvp.NAME)
        return attention_jvp.fused_jvp_attention(model)
    if attention not in ATTENTION:
        raise InfluenceError(f"attention must be one of {ATTENTION}, got {attention!r}")
    return forward_ad_attention()


class _FrozenLinear(torch.autograd.Function):
    """`F.linear(x, W, b)` for a weight and bias without tangent, whose forward-mode rule is just
    `F.linear(dx, W)`.

    torch's own rule for mm(x, W) computes mm(dx, W) + mm(x, dW) and materialises dW = 0 for a
    weight without tangent: a full wasted matmul per frozen linear layer, 3 matmuls instead of 2
    (torch 2.13 CPU: the JVP of a 512 x 576 -> 1536 linear took 20 ms, its forward 6.8 ms). W and b
    travel in a tuple, not as inputs, so autograd hands `jvp` no zero tangents for them either.
    Reverse mode gives the input's gradient only (the weight is frozen by construction).
    """

    @staticmethod
    def forward(x: Tensor, frozen: tuple[Tensor, Tensor | None]) -> Tensor:
        return F.linear(x, *frozen)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.weight = inputs[1][0]

    @staticmethod
    def jvp(ctx, dx: Tensor, _frozen: None) -> Tensor:
        return F.linear(dx, ctx.weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad @ ctx.weight, None


def _has_tangent(t: Tensor | None) -> bool:
    return t is not None and fwAD.unpack_dual(t).tangent is not None


def _tangent_linear_forward(self: torch.nn.Linear, x: Tensor) -> Tensor:
    if _has_tangent(x) and not (_has_tangent(self.weight) or _has_tangent(self.bias)):
        return _FrozenLinear.apply(x, (self.weight, self.bias))
    return F.linear(x, self.weight, self.bias)


@contextlib.contextmanager
def tangent_linears(model: torch.nn.Module | None) -> Iterator[int]:
    """Route every plain `nn.Linear` of `model` through `_FrozenLinear` when its weight has no
    tangent, for a forward-mode pass (a frozen linear then costs one tangent matmul, not two);
    yields how many modules were routed, and restores them on exit. `model` None: nothing to do."""
    patched = []
    if model is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and type(m).forward is torch.nn.Linear.forward:
                if "forward" not in m.__dict__:
                    m.forward = _tangent_linear_forward.__get__(m)
                    patched.append(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward


# ---------------------------------------------------------------- DPO pieces
def split_pairs(logps: Tensor) -> tuple[Tensor, Tensor]:
    k = logps.shape[0] // 2
    return logps[:k], logps[k:]


def dpo_margin(pol_c: Tensor, pol_r: Tensor, ref_c: Tensor, ref_r: Tensor, beta: float) -> Tensor:
    return beta * ((pol_c - ref_c) - (pol_r - ref_r))


def influence_from_directional(m: Tensor, d_c: Tensor, d_r: Tensor, beta: float) -> Tensor:
    """IF = -beta sigmoid(-m) (D_v log pi(y_w) - D_v log pi(y_l)): d/de of softplus(-m(theta + e v))."""
    return -beta * torch.sigmoid(-m) * (d_c - d_r)


# ---------------------------------------------------------------- the query vector
def validation_gradient(
    logp_fn: LogpFn,
    params: Params,
    batches: Iterable[tuple[Batch, Tensor, Tensor]],
    n_val: int,
    beta: float,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Params, float]:
    """g_val = grad of the mean validation DPO loss, accumulated batch by batch.

    `batches` yields (batch with k chosen + k rejected rows, ref_chosen (k,), ref_rejected (k,)).
    Returns (g_val with the params' names, dtypes and devices, the mean validation loss).
    """
    p = {k: t.detach().requires_grad_(True) for k, t in params.items()}
    g = {k: torch.zeros_like(t) for k, t in params.items()}
    total, seen = 0.0, 0
    for batch, ref_c, ref_r in batches:
        pol_c, pol_r = split_pairs(logp_fn(p, batch))
        losses = F.softplus(-dpo_margin(pol_c, pol_r, ref_c.to(pol_c), ref_r.to(pol_r), beta))  # (k,)
        grads = torch.autograd.grad(losses.sum() / n_val, list(p.values()), allow_unused=True)
        for name, gr in zip(p, grads):
            if gr is not None:
                g[name] += gr
        total += float(losses.detach().double().sum())
        seen += losses.shape[0]
        if on_batch:
            on_batch(losses.shape[0])
    if seen != n_val:
        raise InfluenceError(f"validation batches held {seen} pairs, expected {n_val}")
    return g, total / max(n_val, 1)


def validation_hvp(
    logp_fn: LogpFn,
    params: Params,
    batches: list[tuple[Batch, Tensor, Tensor]],
    n_val: int,
    beta: float,
) -> Callable[[Params], Params]:
    """u -> H u, H the Hessian of the mean validation DPO loss (double backward, batch by batch)."""

    def hvp(u: Params) -> Params:
        p = {k: t.detach().requires_grad_(True) for k, t in params.items()}
        out = {k: torch.zeros_like(t) for k, t in params.items()}
        for batch, ref_c, ref_r in batches:
            pol_c, pol_r = split_pairs(logp_fn(p, batch))
            loss = F.softplus(-dpo_margin(pol_c, pol_r, ref_c.to(pol_c), ref_r.to(pol_r), beta)).sum() / n_val
            grads = torch.autograd.grad(loss, list(p.values()), create_graph=True, allow_unused=True)
            gu = sum((g * u[k]).sum() for k, g in zip(p, grads) if g is not None)
            hu = torch.autograd.grad(gu, list(p.values()), allow_unused=True)
            for k, h in zip(p, hu):
                if h is not None:
                    out[k] += h.detach()
        return out

    return hvp


def damped_cg(
    hvp: Callable[[Params], Params], b: Params, damping: float, iters: int, tol: float = 1e-8
) -> tuple[Params, dict]:
    """Solve (H + damping I) x = b by conjugate gradients from x = 0 (a single query vector).

    Stops early at relative residual `tol`, or on non-positive curvature (the damped Hessian
    of a non-convex loss can be indefinite; raise the damping then). Returns (x, info).
    """
    if damping < 0 or iters < 1:
        raise InfluenceError(f"need damping >= 0 and iters >= 1, got {damping}, {iters}")

    def vdot(a: Params, c: Params) -> float:
        return float(dot(a, c))

    x = {k: torch.zeros_like(t) for k, t in b.items()}
    r = {k: t.clone() for k, t in b.items()}
    d = {k: t.clone() for k, t in b.items()}
    rr = b_norm2 = vdot(r, r)
    info = {"iters": 0, "rel_residual": 1.0, "stopped": "max_iters"}
    for i in range(iters):
        hd = hvp(d)
        ad = {k: hd[k] + damping * d[k] for k in d}
        curv = vdot(d, ad)
        if curv <= 0:
            log.warning("CG met non-positive curvature at iteration %d: raise --damping", i)
            info["stopped"] = "negative_curvature"
            break
        alpha = rr / curv
        x = {k: x[k] + alpha * d[k] for k in x}
        r = {k: r[k] - alpha * ad[k] for k in r}
        rr_new = vdot(r, r)
        info.update(iters=i + 1, rel_residual=math.sqrt(rr_new / b_norm2) if b_norm2 else 0.0)
        if info["rel_residual"] < tol:
            info["stopped"] = "converged"
            break
        d = {k: r[k] + (rr_new / rr) * d[k] for k in d}
        rr = rr_new
    return x, info


def fd_step(params: Mapping[str, Tensor], v: Mapping[str, Tensor], rel: float = DEFAULT_FD_REL_STEP) -> float:
    """Step h so that the perturbation h*v has norm rel * ||theta_sel|| (at least rel)."""
    vn = flat_norm(v)
    if vn == 0.0:
        raise InfluenceError("the query vector is zero: every influence would be 0")
    return rel * max(flat_norm(params), 1.0) / vn


# ---------------------------------------------------------------- directional derivatives
def _rows(batch: Batch, idx: list[int]) -> dict[str, Tensor]:
    """Rows `idx` of a right-padded batch, trimmed to their longest sequence."""
    if "target_pos" in batch:
        raise InfluenceError("per-sequence gradients slice rows: give them padded batches, not packed pairs")
    sub = {k: t[idx] for k, t in batch.items()}
    T = max(int(sub["attention_mask"].sum(1).max()), 1)
    return {k: t[:, :T] for k, t in sub.items()}


def sequence_gradient_dots(logp_fn: LogpFn, params: Params, v: Params, batch: Batch) -> tuple[Tensor, Tensor]:
    """(f, <v, grad f>) per row with one explicit autograd backward per sequence (the slow way)."""
    p = {n: t.detach().requires_grad_(True) for n, t in params.items()}
    fs, dfs = [], []
    for i in range(batch["input_ids"].shape[0]):
        lp = logp_fn(p, _rows(batch, [i]))[0]
        grads = torch.autograd.grad(lp, list(p.values()), allow_unused=True)
        dfs.append(sum((v[n].double() * g.double()).sum() for n, g in zip(p, grads) if g is not None))
        fs.append(lp.detach().double())
    return torch.stack(fs), torch.stack([torch.as_tensor(d, dtype=torch.float64) for d in dfs])


def directional_logps(
    logp_fn: LogpFn,
    params: Params,
    v: Params,
    batch: Batch,
    method: str = "jvp",
    step: float | None = None,
    attention: str = "auto",
) -> tuple[Tensor, Tensor]:
    """(log pi_theta(y|x), D_v log pi_theta(y|x)) for every row of the batch, float64 (B,).

    jvp:  exact, one forward-mode pass; only the selected params are primals, so the frozen
          weights carry no tangent (for LoRA the tangent pass costs about one extra forward).
    fd:   (f(theta + h v) - f(theta - h v)) / 2h in the model's dtype; primal (f+ + f-)/2
          (error O(h^2)). Needs no AD at all: the fallback for models without forward AD.
    grad: one autograd backward per sequence, dotted with v (reference).
    `attention` (jvp only): "auto" uses the fused forward-mode attention kernel on CUDA for
    right-padded and packed batches (scoring.attention_jvp), "math" always the unfused math kernel.
    """
    if method == "jvp":
        # Dual tensors on the selected parameters only (torch.autograd.forward_ad): the same
        # numbers as torch.func.jvp, and ~25% less CPU time on SmolLM2 + LoRA (no functorch
        # wrapper per op). Frozen weights are plain tensors, so they carry no tangent, and the linear
        # layers skip the zero tangent torch would otherwise materialise for them (tangent_linears).
        with (
            torch.no_grad(),
            jvp_attention(logp_fn, batch, attention),
            tangent_linears(getattr(logp_fn, "model", None)),
            fwAD.dual_level(),
        ):
            dual = {k: fwAD.make_dual(t, v[k].to(t)) for k, t in params.items()}
            out = fwAD.unpack_dual(logp_fn(dual, batch))
        tangent = out.tangent if out.tangent is not None else torch.zeros_like(out.primal)
        return out.primal.double(), tangent.double()
    if method == "fd":
        h = step if step is not None else fd_step(params, v)
        with torch.no_grad():
            fp = logp_fn({k: t + h * v[k] for k, t in params.items()}, batch).double()
            fm = logp_fn({k: t - h * v[k] for k, t in params.items()}, batch).double()
        return (fp + fm) / 2, (fp - fm) / (2 * h)
    if method == "grad":
        return sequence_gradient_dots(logp_fn, params, v, batch)
    raise InfluenceError(f"method must be one of {METHODS}, got {method!r}")


def forward_ad_error(exc: BaseException) -> bool:
    """Whether an exception means 'no forward-mode AD here' (then fall back to fd)."""
    text = str(exc).lower()
    return isinstance(exc, NotImplementedError | RuntimeError) and (
        "forward ad" in text or "forward-mode" in text or "jvp" in text or "not implemented" in text
    )


def stream_directional(
    logp_fn: LogpFn,
    params: Params,
    v: Params,
    batches: Iterable[tuple[list[int], Batch]],
    method: str = "jvp",
    step: float | None = None,
    fallback: bool = True,
) -> Iterator[tuple[list[int], Tensor, Tensor, str]]:
    """Yield (indices, f, D_v f, method used) batch by batch.

    With `fallback`, a jvp that fails for lack of forward AD switches to fd for this batch and
    every later one (logged once); the method actually used is yielded with each batch.
    """
    if method == "fd" and step is None:
        step = fd_step(params, v)
    for idx, batch in batches:
        try:
            f, df = directional_logps(logp_fn, params, v, batch, method=method, step=step)
        except (NotImplementedError, RuntimeError) as exc:
            if not (method == "jvp" and fallback and forward_ad_error(exc)):
                raise
            log.warning("forward-mode AD failed (%s); falling back to central finite differences", exc)
            method, step = "fd", fd_step(params, v)
            f, df = directional_logps(logp_fn, params, v, batch, method=method, step=step)
        yield idx, f, df, method
