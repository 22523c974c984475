"""Influence at the pair level for the tests: IF of a batch from `directional_logps`, and the
independent per-pair autograd reference it is checked against (slow; the product computes IF from
streamed directional derivatives, prefsift/influence.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prefsift.scoring import influence as I


def batch_influence(
    logp_fn: I.LogpFn,
    params: I.Params,
    v: I.Params,
    batch: I.Batch,
    ref_c: Tensor,
    ref_r: Tensor,
    beta: float,
    method: str = "jvp",
    step: float | None = None,
) -> dict[str, Tensor]:
    """IF for the k pairs of a batch laid out [chosen; rejected] (float64, each (k,)).

    Keys: if, margin, policy_chosen, policy_rejected, d_chosen, d_rejected.
    """
    f, df = I.directional_logps(logp_fn, params, v, batch, method=method, step=step)
    pc, pr = I.split_pairs(f)
    dc, dr = I.split_pairs(df)
    m = I.dpo_margin(pc, pr, ref_c.double(), ref_r.double(), beta)
    return {
        "if": I.influence_from_directional(m, dc, dr, beta),
        "margin": m,
        "policy_chosen": pc,
        "policy_rejected": pr,
        "d_chosen": dc,
        "d_rejected": dr,
    }


def pair_gradient_influence(
    logp_fn: I.LogpFn,
    params: I.Params,
    v: I.Params,
    batch: I.Batch,
    ref_c: Tensor,
    ref_r: Tensor,
    beta: float,
) -> Tensor:
    """Independent reference: <v, grad l(d)> with the full DPO loss of each pair differentiated
    by autograd (no directional-derivative formula involved). Returns IF (k,) float64."""
    k = batch["input_ids"].shape[0] // 2
    p = {n: t.detach().requires_grad_(True) for n, t in params.items()}
    out = []
    for i in range(k):
        lp = logp_fn(p, I._rows(batch, [i, k + i]))  # (2,)
        m = I.dpo_margin(lp[0], lp[1], ref_c[i].to(lp), ref_r[i].to(lp), beta)
        grads = torch.autograd.grad(F.softplus(-m), list(p.values()), allow_unused=True)
        out.append(sum((v[n].double() * g.double()).sum() for n, g in zip(p, grads) if g is not None))
    return torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in out])
