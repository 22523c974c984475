"""IRM, LossDiff and the DPO loss as float64 numpy functions of cached log-probs (docs/METHOD.md).

m_θ(d) = β[(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))]
ℓ(θ; d) = −log σ(m_θ(d)) = softplus(−m_θ(d))
IRM(d) = m_θ(d);  LossDiff(d) = ℓ(θ; d) − ℓ(θ_val; d)
"""

from __future__ import annotations

import numpy as np


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a positive finite number, got {beta}")
    return beta


def margin(pol_c, pol_r, ref_c, ref_r, beta: float = 0.1) -> np.ndarray:
    """The implicit reward margin β[(π_c − ref_c) − (π_r − ref_r)] (TRL's rewards/margins per pair)."""
    beta = _check_beta(beta)
    return beta * ((_f64(pol_c) - _f64(ref_c)) - (_f64(pol_r) - _f64(ref_r)))


def softplus(x) -> np.ndarray:
    """log(1 + e^x) without overflow for large x or loss of precision for very negative x."""
    x = _f64(x)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def dpo_loss(m) -> np.ndarray:
    """−log σ(m) = softplus(−m), stable for any margin."""
    return softplus(-_f64(m))


def irm(pol_c, pol_r, ref_c, ref_r, beta: float = 0.1) -> np.ndarray:
    """IRM(d) = m_θ(d): validation-free; higher = the policy already prefers the chosen response more."""
    return margin(pol_c, pol_r, ref_c, ref_r, beta)


def lossdiff(pol_c, pol_r, val_c, val_r, ref_c, ref_r, beta: float = 0.1) -> np.ndarray:
    """ℓ(θ; d) − ℓ(θ_val; d): positive when moving toward the validation objective lowers d's loss."""
    return dpo_loss(margin(pol_c, pol_r, ref_c, ref_r, beta)) - dpo_loss(
        margin(val_c, val_r, ref_c, ref_r, beta)
    )


def reward_accuracy(m) -> float:
    """Share of pairs with a positive margin (TRL's rewards/accuracies)."""
    m = _f64(m)
    return float(np.mean(m > 0)) if m.size else float("nan")
