"""How well the cheap scores track exact influence: correlations and selection overlaps.

Pure numpy, NaN-aware (a NaN score never counts as selected and drops out of correlations).
Percentiles use linear interpolation (numpy's default, which equals DuckDB's quantile_cont),
so a band computed here equals the same band computed in SQL by the selection rules.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).ravel()


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _f64(x), _f64(y)
    if x.shape != y.shape:
        raise ValueError(f"length mismatch: {x.size} vs {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def pearson(x, y) -> float:
    """Pearson correlation over the pairs where both are finite; NaN if < 2 or a constant input."""
    x, y = _paired(x, y)
    if x.size < 2 or x.min() == x.max() or y.min() == y.max():  # exact test: a constant has no correlation
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = np.abs(dx).max(), np.abs(dy).max()
    if sx == 0 or sy == 0:
        return float("nan")
    dx, dy = dx / sx, dy / sy  # scale first: squares of tiny deviations would underflow to 0
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / den) if den > 0 else float("nan")


def average_ranks(x) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (scipy.stats.rankdata 'average')."""
    x = _f64(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Runs of equal values: each run gets the mean of the positions it spans.
    starts = np.r_[0, np.flatnonzero(np.diff(xs) != 0) + 1]
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman correlation = Pearson of average ranks (ties averaged), over finite pairs."""
    x, y = _paired(x, y)
    if x.size < 2:
        return float("nan")
    return pearson(average_ranks(x), average_ranks(y))


def band_thresholds(x, lo: float, hi: float) -> tuple[float, float]:
    """(lo-th, hi-th) percentiles of the finite values, linear interpolation."""
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"band must satisfy 0 <= lo < hi <= 100, got {lo}, {hi}")
    x = _f64(x)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    a, b = np.percentile(x, [lo, hi])
    return float(a), float(b)


def band_mask(x, lo: float = 10.0, hi: float = 90.0, inclusive: bool = True) -> np.ndarray:
    """The middle band δ_lo <= x <= δ_hi; NaN -> False.

    Inclusive by default, like every band of the project's selection rules (storage.rules,
    prefsift.select), so a stored TIF flag equals the TIF the rules compute. METHOD.md writes
    the band with strict inequalities (`inclusive=False`); the two differ only on ties with
    a threshold. A bound at 0 or 100 always keeps the extreme values themselves.
    """
    x = _f64(x)
    a, b = band_thresholds(x, lo, hi)
    fin = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        above = (x >= a) if (inclusive or lo == 0) else (x > a)
        below = (x <= b) if (inclusive or hi == 100) else (x < b)
    return fin & above & below


def overlap(a, b) -> float:
    """Overlap coefficient |A ∩ B| / min(|A|, |B|) of two boolean masks; NaN if one is empty."""
    a, b = np.asarray(a, dtype=bool).ravel(), np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.size} vs {b.size}")
    m = min(int(a.sum()), int(b.sum()))
    return float((a & b).sum() / m) if m else float("nan")


def influence_diagnostics(
    influence,
    others: Mapping[str, np.ndarray],
    band: tuple[float, float] = (10.0, 90.0),
    other_band: tuple[float, float] = (10.0, 90.0),
) -> dict[str, float]:
    """Correlations and TIF overlaps of IF with the cheap scores, aligned by position.

    `others`: metric name -> scores (e.g. {"irm": ..., "lossdiff": ...}). With both irm and
    lossdiff present, the LossDiff-IRM rule (intersection of both bands) is compared too.
    Keys: pearson_<m>, spearman_<m>, overlap_<m>, overlap_lossdiff_irm, n_tif, n_pairs.
    """
    inf = _f64(influence)
    tif = band_mask(inf, *band)
    out: dict[str, float] = {"n_pairs": float(np.isfinite(inf).sum()), "n_tif": float(tif.sum())}
    masks = {}
    for name, values in others.items():
        v = _f64(values)
        out[f"pearson_{name}"] = pearson(inf, v)
        out[f"spearman_{name}"] = spearman(inf, v)
        masks[name] = band_mask(v, *other_band)
        out[f"overlap_{name}"] = overlap(masks[name], tif)
    if "irm" in masks and "lossdiff" in masks:
        out["overlap_lossdiff_irm"] = overlap(masks["irm"] & masks["lossdiff"], tif)
    return out
