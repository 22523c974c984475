"""How well the cheap scores track exact influence: correlations, AUROC and their intervals.

Pure numpy, NaN-aware (a NaN score drops out of correlations). Bands (what a rule keeps) are the
selection engine's, storage/engine.py, and their overlaps storage/chance.py's; prefsift/evidence.py
arranges these numbers beside their chance levels.
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
    return float(pearson_rows(x[None], y[None])[0]) if x.size >= 2 else float("nan")


def spearman(x, y) -> float:
    """Spearman correlation = Pearson of average ranks (ties averaged), over finite pairs."""
    x, y = _paired(x, y)
    return float(spearman_rows(x[None], y[None])[0]) if x.size >= 2 else float("nan")


# ---------------------------------------------------------------- uncertainty and chance levels
# docs/METHOD.md "Chance levels": every number comes with the value chance gives and an interval.
# Bootstrap intervals are percentile intervals over resampled pairs (rows drawn with
# replacement, jointly for all columns), seeded, so a rerun gives the same interval.


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size < 10:  # too few usable resamples to say anything
        return float("nan"), float("nan")
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [a, 100 - a])
    return float(lo), float(hi)


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0, max_cells: int = 4_000_000):
    """Row indices of `n_boot` resamples of n rows, in blocks of at most `max_cells` indices:
    (b, n) arrays whose concatenation is the same for any block size (one seeded stream)."""
    rng = np.random.default_rng(seed)
    per = max(1, max_cells // max(n, 1))
    for start in range(0, n_boot, per):
        yield rng.integers(0, n, size=(min(per, n_boot - start), n))  # (b, n)


def bootstrap_interval(
    rows, columns: tuple, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic: rows of `columns` resampled jointly, `n_boot`
    times; `rows` computes it for many resamples at once from (b, n) column blocks (pearson_rows,
    ...). Resamples where it is undefined (NaN) are left out."""
    cols = [np.asarray(c) for c in columns]
    n = len(cols[0])
    if n < 3:
        return float("nan"), float("nan")
    vals = [
        np.asarray(rows(*(c[idx] for c in cols)), np.float64) for idx in bootstrap_indices(n, n_boot, seed)
    ]
    return _percentile_interval(np.concatenate(vals), level)


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair of (b, n) arrays; NaN for a constant row."""
    const = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)  # exact: a constant has no correlation
    with np.errstate(invalid="ignore", divide="ignore"):
        dx, dy = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
        # scale first: squares of tiny deviations would underflow to 0
        dx, dy = dx / np.abs(dx).max(axis=1, keepdims=True), dy / np.abs(dy).max(axis=1, keepdims=True)
        den = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
        r = (dx * dy).sum(axis=1) / den
    return np.where(const | ~(den > 0), np.nan, r)


def average_ranks_rows(a: np.ndarray) -> np.ndarray:
    """1-based ranks of every row of a (b, n) array, ties sharing their average rank
    (scipy.stats.rankdata 'average'): a run of ties shares the mean of the 1-based positions it spans."""
    b, n = a.shape
    order = np.argsort(a, axis=1, kind="mergesort")
    s = np.take_along_axis(a, order, axis=1)
    k = np.broadcast_to(np.arange(n), (b, n))
    first = np.ones((b, n), bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]  # a run of ties starts here
    last = np.ones((b, n), bool)
    last[:, :-1] = s[:, :-1] != s[:, 1:]  # a run of ties ends here
    start = np.maximum.accumulate(np.where(first, k, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, k, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((b, n), dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=1)
    return ranks


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return pearson_rows(average_ranks_rows(x), average_ranks_rows(y))


def auroc_rows(score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """`auroc` of every row of (b, n) arrays; NaN where a row lacks a class."""
    pos = positive.astype(bool)
    n1 = pos.sum(axis=1)
    n0 = pos.shape[1] - n1
    u = (average_ranks_rows(score) * pos).sum(axis=1) - n1 * (n1 + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def chance_abs_r(n: int) -> float:
    """|r| below about 2/sqrt(n) is indistinguishable from 0 at n pairs (docs/METHOD.md)."""
    return 2.0 / np.sqrt(n) if n > 0 else float("nan")


def partial_pearson(x, y, covariates) -> float:
    """Pearson correlation of x and y once both are residualized on the covariates (e.g. token
    counts): what is left of the correlation when length is held fixed. Rows with a non-finite
    value anywhere are left out."""
    x, y = _f64(x), _f64(y)
    z = np.asarray(covariates, dtype=np.float64).reshape(len(x), -1)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z).all(axis=1)
    if ok.sum() < z.shape[1] + 3:
        return float("nan")
    return float(partial_pearson_rows(x[ok][None], y[ok][None], z[ok][None])[0])


def auroc(score, positive) -> float:
    """P(score of a positive > score of a negative), ties counted 1/2 (Mann-Whitney U / n1 n0).
    0.5 = chance. NaN scores are left out; NaN if a class is empty."""
    s = _f64(score)
    pos = np.asarray(positive, dtype=bool).ravel()
    ok = np.isfinite(s)
    return float(auroc_rows(s[ok][None], pos[ok][None])[0])


def partial_pearson_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """`partial_pearson` of every resample: x, y (b, n), covariates z (b, n, k)."""
    design = np.concatenate([np.ones(x.shape + (1,)), z.reshape(x.shape + (-1,))], axis=2)  # (b, n, k+1)
    dt = np.swapaxes(design, 1, 2)  # (b, k+1, n)
    proj = np.linalg.pinv(dt @ design) @ dt  # (b, k+1, n): least-squares coefficients per row
    rx = x - (design @ (proj @ x[..., None]))[..., 0]
    ry = y - (design @ (proj @ y[..., None]))[..., 0]
    return pearson_rows(rx, ry)


def correlation_evidence(
    x, y, covariates=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Pearson and Spearman of x and y with bootstrap intervals, the |r| chance level, and with
    covariates the partial Pearson (and its interval) holding them fixed."""
    x, y = _f64(x), _f64(y)
    ok = np.isfinite(x) & np.isfinite(y)
    z = None
    if covariates is not None:
        z = np.asarray(covariates, dtype=np.float64).reshape(len(x), -1)
        ok &= np.isfinite(z).all(axis=1)
        z = z[ok]
    x, y = x[ok], y[ok]
    out = {"n": int(x.size), "chance_abs_r": chance_abs_r(int(x.size))}
    for name, fn, rows in (("pearson", pearson, pearson_rows), ("spearman", spearman, spearman_rows)):
        out[name] = fn(x, y)
        out[f"{name}_lo"], out[f"{name}_hi"] = bootstrap_interval(rows, (x, y), n_boot, seed, level)
    if z is not None:
        out["partial_pearson"] = partial_pearson(x, y, z)
        out["partial_pearson_lo"], out["partial_pearson_hi"] = bootstrap_interval(
            partial_pearson_rows, (x, y, z), n_boot, seed, level
        )
    return out


def auroc_evidence(score, positive, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """AUROC of `score` for the positive pairs with a bootstrap interval (0.5 = chance)."""
    s = _f64(score)
    pos = np.asarray(positive, dtype=bool).ravel()
    ok = np.isfinite(s)
    s, pos = s[ok], pos[ok]
    lo, hi = bootstrap_interval(auroc_rows, (s, pos), n_boot, seed, level)
    return {
        "n_positive": int(pos.sum()),
        "n_negative": int((~pos).sum()),
        "auroc": auroc(s, pos),
        "auroc_lo": lo,
        "auroc_hi": hi,
        "chance": 0.5,
    }


def arm_bootstrap(
    values: Mapping[str, np.ndarray],
    refs: tuple[str, ...] = (),
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Means of experiment arms with intervals, and paired differences to reference arms.

    `values`: arm -> (S, n) array, one row per training seed, one column per eval pair (the same
    eval pairs, in the same order, for every arm; row s of every arm shares seed s). Every
    replicate resamples seeds and eval pairs with replacement, the *same* draw for every arm, so
    a difference keeps the pairing (per eval pair and per seed) and its interval is the paired one.
    Returns {"arms": {arm: {mean, lo, hi}}, "diffs": {(arm, ref): {diff, lo, hi, p}}} where p is
    the two-sided bootstrap p-value of "no difference" (2 x the share of replicates on the far side
    of 0, counted as (1 + k) / (1 + n_boot), at most 1)."""
    arrays = {a: np.asarray(v, dtype=np.float64) for a, v in values.items()}
    shapes = {v.shape[1] for v in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"every arm needs the same eval pairs, got column counts {sorted(shapes)}")
    n = shapes.pop()
    n_seeds = {a: v.shape[0] for a, v in arrays.items()}
    rng = np.random.default_rng(seed)
    s_max = max(n_seeds.values())
    rows = rng.integers(0, s_max, size=(n_boot, s_max))  # (B, S) seed draws
    cols = rng.integers(0, n, size=(n_boot, n))  # (B, n) eval-pair draws
    reps = {}
    for a, v in arrays.items():
        s = n_seeds[a]
        r = rows[:, :s] % s  # an arm with one row (e.g. θ itself) keeps it
        # mean over the resampled seeds of the mean over the resampled eval pairs
        per_seed = np.stack([v[r[b]][:, cols[b]].mean(axis=1) for b in range(n_boot)])  # (B, s)
        reps[a] = per_seed.mean(axis=1)
    tail = (1 - level) / 2 * 100
    out: dict = {"arms": {}, "diffs": {}}
    for a, v in arrays.items():
        lo, hi = np.percentile(reps[a], [tail, 100 - tail])
        out["arms"][a] = {"mean": float(v.mean()), "lo": float(lo), "hi": float(hi), "n_seeds": n_seeds[a]}
    for ref in refs:
        if ref not in arrays:
            continue
        for a in arrays:
            if a == ref:
                continue
            d = reps[a] - reps[ref]
            lo, hi = np.percentile(d, [tail, 100 - tail])
            # (1 + count) / (1 + B): a bootstrap p-value is never reported as exactly 0
            p = min(1.0, 2 * (1 + min(int((d <= 0).sum()), int((d >= 0).sum()))) / (1 + n_boot))
            diff = float(arrays[a].mean() - arrays[ref].mean())
            out["diffs"][(a, ref)] = {"diff": diff, "lo": float(lo), "hi": float(hi), "p": p}
    return out
