"""Band calibration and the text of selection diagnostics.

Calibration: given IF on all pairs or on a sample, find the LossDiff and IRM percentile bands
whose intersection overlaps most with the TIF selection, among the rules that keep a fraction
of the pool within [min_kept, max_kept]. A grid search, made exact and fast with ranks:

1. load the pool's three score columns once (Snapshot.wide);
2. per metric, the grid thresholds thr[0..G] = percentiles 0, step, ..., 100 (numpy's linear
   interpolation, the thresholds the engine resolves a band to);
3. a value v is inside band (a, b), inclusive, iff a <= J(v) and K(v) <= b with
   J = #(thr <= v) - 1 and K = #(thr < v): so each pair reduces to a small code (J, K);
4. count pairs per (code_lossdiff, code_irm) cell: all pairs, pairs with IF, TIF pairs;
5. kept counts of every band combination at once: Mask_L @ C @ Mask_I^T (bands x codes).
Cost: O(n log n) for the codes, then matrix products of a few hundred rows; the chosen rule
is re-evaluated by the engine so the reported counts are exactly those `prefsift select` gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefsift.config import CalibrationConfig
from prefsift.evidence import num


def _codes(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per value the index of its (J, K) code of step 3 (-1: not finite), and the unique codes."""
    ok = np.isfinite(values)
    thr = np.percentile(values[ok], grid)  # (G+1,)
    j = np.searchsorted(thr, values[ok], side="right") - 1
    k = np.searchsorted(thr, values[ok], side="left")
    codes, inv = np.unique(np.stack([j, k], axis=1), axis=0, return_inverse=True)  # (C, 2), (n,)
    index = np.full(len(values), -1)
    index[ok] = inv.reshape(-1)
    return index, codes


def _band_masks(codes: np.ndarray, n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(n_grid, k=1)  # every band a < b on the grid, (B,)
    mask = (a[:, None] <= codes[None, :, 0]) & (codes[None, :, 1] <= b[:, None])  # (B, C)
    return np.stack([a, b], axis=1), mask.astype(np.float64)


def calibrate_arrays(
    first: np.ndarray, second: np.ndarray, influence: np.ndarray, cfg: CalibrationConfig
) -> dict:
    """The grid search on arrays (NaN = missing). Returns the best bands and a ranked table."""
    n_total = len(first)
    grid = np.linspace(0.0, 100.0, int(round(100 / cfg.step)) + 1)
    both = np.isfinite(first) & np.isfinite(second)
    has_if = np.isfinite(influence)
    if not has_if.any():
        raise ValueError("no pair has an IF score: run `prefsift influence` first")
    from prefsift.storage.engine import band

    lo, hi, tif = band(influence, np.ones(n_total, bool), cfg.tif_lo, cfg.tif_hi)  # the engine's TIF band

    c1, codes1 = _codes(first, grid)
    c2, codes2 = _codes(second, grid)
    shape = (len(codes1), len(codes2))

    def cells(mask: np.ndarray) -> np.ndarray:
        m = mask & both
        return np.bincount(c1[m] * shape[1] + c2[m], minlength=shape[0] * shape[1]).reshape(shape)

    bands1, m1 = _band_masks(codes1, len(grid))
    bands2, m2 = _band_masks(codes2, len(grid))
    kept = m1 @ cells(np.ones(n_total, bool)) @ m2.T  # (B1, B2)
    kept_s = m1 @ cells(has_if) @ m2.T
    n_tif = int(tif.sum())
    frac = kept / n_total if n_total else kept
    denom = np.minimum(kept_s, n_tif)

    def overlaps(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inter = m1 @ cells(t) @ m2.T
        return inter, np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)

    inter, overlap = overlaps(tif)
    ok = (frac >= cfg.min_kept - 1e-12) & (frac <= cfg.max_kept + 1e-12)
    if not ok.any():
        raise ValueError(
            f"no band pair on a {cfg.step:g}-percentile grid keeps {cfg.min_kept:.0%}-{cfg.max_kept:.0%} of the pool"
        )
    # Best overlap; ties go to the larger kept fraction, then the first on the grid.
    score = np.where(ok, overlap, -1.0)
    order = np.lexsort((-frac.ravel(), -score.ravel()))
    n_if = int(has_if.sum())
    # Same-size random selection of one fixed rule: expected overlap max(kept, TIF) / n.
    chance = np.maximum(kept_s, n_tif) / max(n_if, 1)
    top = []
    for idx in order[: min(10, int(ok.sum()))]:
        i, j = np.unravel_index(idx, score.shape)
        top.append(
            {
                cfg.metrics[0]: f"{grid[bands1[i, 0]]:g}-{grid[bands1[i, 1]]:g}",
                cfg.metrics[1]: f"{grid[bands2[j, 0]]:g}-{grid[bands2[j, 1]]:g}",
                "kept_fraction": float(frac[i, j]),
                "overlap_tif": float(overlap[i, j]),
                "chance": float(chance[i, j]),
                "lift": float(overlap[i, j] / chance[i, j]) if chance[i, j] > 0 else float("nan"),
            }
        )
    i, j = np.unravel_index(order[0], score.shape)
    # The search's own null: the best feasible overlap when TIF membership is shuffled among
    # the pairs with IF (the scores' bands fixed), n_perm times.
    rng = np.random.default_rng(cfg.seed)
    where_if = np.flatnonzero(has_if)
    best_null = np.empty(cfg.n_perm)
    for k in range(cfg.n_perm):
        t = np.zeros(n_total, bool)
        t[rng.choice(where_if, size=n_tif, replace=False)] = True
        best_null[k] = np.where(ok, overlaps(t)[1], -1.0).max()
    search_null = None
    if cfg.n_perm:
        lo_q, hi_q = np.percentile(best_null, [2.5, 97.5])
        search_null = {
            "n_perm": cfg.n_perm,
            "seed": cfg.seed,
            "best_overlap_lo": float(lo_q),
            "best_overlap_hi": float(hi_q),
            "best_overlap_mean": float(best_null.mean()),
            # (1 + #{null >= observed}) / (1 + n_perm): a permutation p-value is never 0
            "p_value": float((1 + (best_null >= overlap[i, j] - 1e-12).sum()) / (1 + cfg.n_perm)),
        }
    return {
        "chance": float(chance[i, j]),
        "n_kept_with_if": int(kept_s[i, j]),
        "n_both": int(inter[i, j]),
        "search_null": search_null,
        "bands": {
            cfg.metrics[0]: (float(grid[bands1[i, 0]]), float(grid[bands1[i, 1]])),
            cfg.metrics[1]: (float(grid[bands2[j, 0]]), float(grid[bands2[j, 1]])),
        },
        "kept_fraction": float(frac[i, j]),
        "overlap_tif": float(overlap[i, j]),
        "n_total": n_total,
        "n_if": n_if,
        "n_tif": n_tif,
        "tif_thresholds": (float(lo), float(hi)),
        "n_candidates": int(ok.sum()),
        "n_grid": int(score.size),
        "top": pd.DataFrame(top),
    }


def calibrate(con, dataset: str, cfg: CalibrationConfig, runs: dict | None = None) -> dict:
    """Load the pool once, search the grid, then evaluate the chosen rule with the engine."""
    from prefsift.storage import engine
    from prefsift.storage import rules as R

    m1, m2 = cfg.metrics
    snap, runs = engine.load(con, dataset, runs, (m1, m2, "if"), cfg.split, only_need=True)
    df = snap.wide(runs, cfg.split)
    out = calibrate_arrays(df[m1].to_numpy(), df[m2].to_numpy(), df["if"].to_numpy(), cfg)
    (a1, b1), (a2, b2) = out["bands"][m1], out["bands"][m2]
    rule = R.Intersect((R.Band(m1, a1, b1), R.Band(m2, a2, b2)))
    res = engine.evaluate_on(snap, rule, runs, cfg.split, with_annotations=False).result
    out.update(rule=rule.to_text(), runs=runs, rule_n_kept=res.n_kept, rule_fraction=res.fraction)
    # The chosen rule as if fixed in advance: exact chance level, null range, kappa, Fisher's p.
    from prefsift.storage.chance import CHANCE_KEYS, overlap_chance

    fixed = overlap_chance(out["n_if"], out["n_kept_with_if"], out["n_tif"], out["n_both"])
    out["fixed_rule_chance"] = {k: fixed[k] for k in CHANCE_KEYS}
    return out


# ---------------------------------------------------------------- text
def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_result(res) -> str:
    """One evaluated rule (storage.engine.RuleResult) in a few lines."""
    lines = [
        f"rule: {res.rule}  (split {res.split or 'all'})",
        f"kept {res.n_kept:,} of {res.n_total:,} pairs ({_pct(res.fraction)})",
    ]
    if res.n_missing:
        per = ", ".join(f"{m}: {n:,}" for m, n in res.missing.items() if n)
        lines.append(
            f"missing scores: {res.n_missing:,} pairs lack a score the rule reads ({per}); they are dropped"
        )
    if res.n_truncated:
        lines.append(f"left out {res.n_truncated:,} fully truncated pair(s) (no response token left)")
    if res.forced_keep or res.forced_drop:
        lines.append(f"annotations: {res.forced_keep} forced keep, {res.forced_drop} forced drop")
    for part, info in res.resolved.items():
        if "lo" in info:
            lines.append(f"  {part}: keep {info['lo']!r} <= {info['metric']} <= {info['hi']!r}")
        elif "value" in info and info["value"] is not None:
            lines.append(f"  {part}: k-th value {info['value']!r}")
        else:
            lines.append(f"  {part}: {info}")
    return "\n".join(lines)


def format_diagnostics(d: dict) -> str:
    lines = [
        f"selection {d['selection']!r} on {d['dataset']} ({d['split']}): {d['rule']}",
        f"kept {d['n_kept']:,} of {d['n_total']:,} ({_pct(d['fraction'])})"
        + (f"; {d['n_missing']:,} pairs lacked a score" if d.get("n_missing") else ""),
    ]
    if d.get("tif"):
        t = d["tif"]
        lines.append(
            f"overlap with TIF ({t['rule']}, {t['n_scored']:,} pairs with IF): {t['overlap']:.3f} "
            f"({t['n_both']:,} shared; TIF keeps {t['n_b']:,}); a random selection of the same size: "
            f"{num(t.get('chance'))} (95% range {num(t.get('null_lo'))}-{num(t.get('null_hi'))}), "
            f"lift {num(t.get('lift'))}, kappa {num(t.get('kappa'))}, Fisher p {num(t.get('p_value'), '.3g')}"
        )
    if len(d["overlaps"]):
        lines.append("overlap with other selections (|A and B| / min):")
        for _, r in d["overlaps"].iterrows():
            lines.append(f"  {r['other']}: {r['overlap']:.3f} ({r['n_both']:,} shared)")
    if d.get("noise"):
        nz = d["noise"]
        lines.append(
            f"label noise: drops {_pct(nz['noisy_dropped_share'])} of {nz['n_noisy']:,} noisy pairs vs "
            f"{_pct(nz['clean_dropped_share'])} of {nz['n_clean']:,} clean pairs (a random drop of the same "
            f"size: {_pct(nz.get('chance_dropped_share'))} of each; Fisher p {num(nz.get('p_value'), '.3g')})"
        )
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        if len(d["scores"]):
            lines += ["scores, kept vs dropped:", d["scores"].to_string(index=False)]
        lines += ["lengths (characters), kept vs dropped:", d["lengths"].to_string(index=False)]
    return "\n".join(lines)


def frames_to_records(d: dict) -> dict:
    """JSON-ready copy of a dict holding DataFrames."""
    return {k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v) for k, v in d.items()}
