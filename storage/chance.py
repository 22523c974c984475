"""Chance levels of selection counts: what a random selection of the same size would give.

A selection A of a pairs out of n, compared with a reference set T of t pairs (TIF, or the
noisy pairs): if A were drawn at random, |A and T| would follow the hypergeometric
distribution (n, t, a). Everything here is exact arithmetic on that distribution, no sampling:
- expected overlap coefficient E|A and T| / min(a, t) = max(a, t) / n (docs/METHOD.md);
- its 2.5-97.5% range (the null interval a permutation test would estimate);
- lift = observed / expected overlap, Cohen's kappa of the 2x2 table (0 = chance);
- one-sided p-value P(|A and T| >= observed): Fisher's exact test of the 2x2 table;
and the Wilson interval of a proportion (a reward accuracy on n held-out pairs).
Plain Python (math.lgamma), so the dashboard, the SQL diagnostics and the CLI share it.
"""

from __future__ import annotations

import math


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_pmf(n: int, t: int, a: int) -> tuple[int, list[float]]:
    """(x_min, [P(X = x_min), ..., P(X = x_max)]) for X = |A and T|, A uniform of size a."""
    if not (0 <= a <= n and 0 <= t <= n):
        raise ValueError(f"need 0 <= a, t <= n, got n={n}, t={t}, a={a}")
    lo, hi = max(0, a + t - n), min(a, t)
    total = _log_comb(n, a)
    probs = [math.exp(_log_comb(t, x) + _log_comb(n - t, a - x) - total) for x in range(lo, hi + 1)]
    s = sum(probs)
    return lo, [p / s for p in probs]


def _quantile(lo: int, probs: list[float], q: float) -> int:
    """The smallest x with P(X <= x) >= q."""
    c = 0.0
    for i, p in enumerate(probs):
        c += p
        if c >= q - 1e-12:
            return lo + i
    return lo + len(probs) - 1


def p_at_least(n: int, t: int, a: int, x: int) -> float:
    """P(|A and T| >= x) for a random A of size a: Fisher's exact test, one-sided (more shared)."""
    lo, probs = hypergeom_pmf(n, t, a)
    return float(min(1.0, sum(p for i, p in enumerate(probs) if lo + i >= x)))


def kappa(n: int, a: int, t: int, both: int) -> float:
    """Cohen's kappa of 'in A' vs 'in T' over n pairs (0 = chance agreement, 1 = identical)."""
    if n == 0:
        return float("nan")
    p_o = (both + (n - a - t + both)) / n
    p_e = (a / n) * (t / n) + (1 - a / n) * (1 - t / n)
    return (p_o - p_e) / (1 - p_e) if p_e < 1 else float("nan")


# What overlap_chance adds to the counts: the chance level, its null range, lift, kappa, Fisher's p.
CHANCE_KEYS = ("chance", "null_lo", "null_hi", "lift", "kappa", "p_value")


def overlap_chance(n: int, a: int, t: int, both: int, level: float = 0.95) -> dict:
    """The overlap |A and T| / min(a, t) of A with T, beside what a random A of size a gets."""
    small = min(a, t)
    out = {"n": n, "n_a": a, "n_b": t, "n_both": both, "overlap": both / small if small else float("nan")}
    if n == 0 or small == 0:
        return {**out, **dict.fromkeys(CHANCE_KEYS, float("nan"))}
    lo, probs = hypergeom_pmf(n, t, a)
    tail = (1 - level) / 2
    chance = max(a, t) / n  # = (a t / n) / min(a, t)
    return {
        **out,
        "chance": chance,
        "null_lo": _quantile(lo, probs, tail) / small,
        "null_hi": _quantile(lo, probs, 1 - tail) / small,
        "lift": out["overlap"] / chance,
        "kappa": kappa(n, a, t, both),
        "p_value": p_at_least(n, t, a, both),
    }


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (z = 1.96) Wilson score interval of the proportion k / n; (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # clipped: at k = 0 (or n) the end is exactly 0 (or 1), which rounding can miss by 1e-17
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))
