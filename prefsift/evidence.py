"""Diagnostics a user can trust: each one beside its chance level and with a 95% interval.

docs/METHOD.md "Chance levels". Arrays come from storage (`storage.diagnose.evidence_frame`), the
maths from `scoring.diagnostics` (bootstrap intervals, partial correlation, AUROC) and
`storage.chance` (exact chance levels of overlaps); this module only arranges them:
1. bands: overlap with TIF of the LossDiff, IRM and LossDiff-IRM bands (and of a selection) at
   several widths, next to a same-size random selection's expected overlap, its 2.5-97.5% range,
   lift, Cohen's kappa and Fisher's p (wide bands make every selection overlap);
2. correlations of each score with IF: Pearson and Spearman with bootstrap intervals, the
   partial Pearson holding token counts fixed, for all pairs and split into pairs θ trained on
   and pairs it did not;
3. length: each score's correlation with the token counts (length drives all three scores);
4. noise: AUROC of each score for the flagged noisy pairs (a low score flags a pair as noisy).
Each row carries n; a number whose interval covers its chance level shows nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BANDS = ((10.0, 90.0), (20.0, 80.0), (33.0, 67.0))
SCORES = ("irm", "lossdiff")


@dataclass(frozen=True)
class EvidenceConfig:
    n_boot: int = 1000  # bootstrap resamples per interval
    seed: int = 0  # the bootstrap's seed: a rerun gives the same intervals
    level: float = 0.95
    bands: tuple[tuple[float, float], ...] = BANDS

    def __post_init__(self) -> None:
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be at least 100, got {self.n_boot}")
        if not 0.5 <= self.level < 1:
            raise ValueError(f"level must be in [0.5, 1), got {self.level}")
        for lo, hi in self.bands:
            if not 0 <= lo < hi <= 100:
                raise ValueError(f"bad band {lo}-{hi}")


def _clean(d: dict) -> dict:
    """JSON-ready: numpy scalars to Python, NaN to None."""
    items = ((k, v.item() if isinstance(v, np.generic) else v) for k, v in d.items())
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in items}


def band_rows(df, cfg: EvidenceConfig) -> list[dict]:
    """Overlap with TIF per band width: each score's band, LossDiff-IRM, and the selection (`kept`)."""
    from prefsift.storage.chance import overlap_chance
    from prefsift.storage.engine import band

    if "if" not in df:
        return []
    f = df["if"].to_numpy(np.float64)
    has_if = np.isfinite(f)
    n = int(has_if.sum())
    pool = np.ones(len(df), bool)
    rows = []
    for lo, hi in cfg.bands:
        tif = band(f, pool, lo, hi)[2]  # the selection engine's band: what `prefsift select` keeps
        masks = {m: band(df[m].to_numpy(np.float64), pool, lo, hi)[2] for m in SCORES if m in df}
        if len(masks) == 2:
            masks["lossdiff-irm"] = masks["lossdiff"] & masks["irm"]
        if "kept" in df and lo == cfg.bands[0][0] and hi == cfg.bands[0][1]:
            masks["selection"] = df["kept"].to_numpy(bool)
        for name, a in masks.items():
            a = a & has_if
            ch = overlap_chance(n, int(a.sum()), int(tif.sum()), int((a & tif).sum()), cfg.level)
            rows.append(_clean({"band": f"{lo:g}-{hi:g}", "rule": name, **ch}))
    return rows


def influence_diagnostics(influence, others: dict, band: tuple[float, float] = (10.0, 90.0)) -> dict:
    """`prefsift influence`'s summary, flat: Pearson/Spearman of IF with each cheap score (`others`:
    name -> scores aligned with `influence`), and `band_rows` at the one band: overlap_<m>,
    n_kept_<m>, n_both_<m>, chance_<m>, null_lo_<m>, null_hi_<m>, p_value_<m> (LossDiff-IRM as
    lossdiff_irm), n_tif, n_pairs."""
    import pandas as pd

    from prefsift.scoring.diagnostics import pearson, spearman

    f = np.asarray(influence, np.float64)
    out = {"n_pairs": float(np.isfinite(f).sum())}
    for m, v in others.items():
        out[f"pearson_{m}"], out[f"spearman_{m}"] = pearson(f, v), spearman(f, v)
    keys = {"overlap": "overlap", "n_kept": "n_a", "n_both": "n_both"}
    keys |= {k: k for k in ("chance", "null_lo", "null_hi", "p_value")}
    for r in band_rows(pd.DataFrame({"if": f, **others}), EvidenceConfig(bands=(tuple(band),))):
        m = r["rule"].replace("-", "_")
        out |= {f"{k}_{m}": float("nan") if r[c] is None else r[c] for k, c in keys.items()}
        out["n_tif"] = float(r["n_b"])  # the same TIF for every rule
    return out


def _subsets(df) -> list[tuple[str, np.ndarray]]:
    out = [("all", np.ones(len(df), bool))]
    if "trained" in df:  # a subset equal to all pairs is not repeated (its row would be a copy)
        t = df["trained"].to_numpy(bool)
        out += [(name, m) for name, m in (("trained", t), ("not trained", ~t)) if not m.all()]
    return out


def _tokens(df) -> np.ndarray | None:
    from prefsift.storage.diagnose import TOKEN_COLUMNS

    if not all(c in df for c in TOKEN_COLUMNS):
        return None
    return df[list(TOKEN_COLUMNS)].to_numpy(np.float64)  # (n, 3)


def correlation_rows(df, cfg: EvidenceConfig) -> list[dict]:
    """Each score against IF, per subset (all / trained / not trained), with intervals."""
    from prefsift.scoring.diagnostics import correlation_evidence

    if "if" not in df:
        return []
    tokens = _tokens(df)
    rows = []
    for m in SCORES:
        if m not in df:
            continue
        for subset, mask in _subsets(df):
            if mask.sum() < 3:
                rows.append({"score": m, "with": "if", "subset": subset, "n": int(mask.sum())})
                continue
            z = None if tokens is None else tokens[mask]
            x, f = df[m].to_numpy(np.float64)[mask], df["if"].to_numpy(np.float64)[mask]
            ev = correlation_evidence(x, f, z, cfg.n_boot, cfg.seed, cfg.level)
            rows.append(_clean({"score": m, "with": "if", "subset": subset, **ev}))
    return rows


def length_rows(df, cfg: EvidenceConfig) -> list[dict]:
    """Each score's correlation with token counts (and chosen minus rejected response tokens)."""
    from prefsift.scoring.diagnostics import correlation_evidence
    from prefsift.storage.diagnose import TOKEN_COLUMNS

    tokens = _tokens(df)
    if tokens is None:
        return []
    lengths = {c: tokens[:, i] for i, c in enumerate(TOKEN_COLUMNS)}
    lengths["chosen_minus_rejected"] = tokens[:, 1] - tokens[:, 2]
    rows = []
    for m in (*SCORES, "if"):
        if m not in df:
            continue
        for name, v in lengths.items():
            ev = correlation_evidence(df[m].to_numpy(np.float64), v, None, cfg.n_boot, cfg.seed, cfg.level)
            rows.append(_clean({"score": m, "length": name, **ev}))
    return rows


def noise_rows(df, cfg: EvidenceConfig) -> list[dict]:
    """AUROC of each score for the flagged noisy pairs: P(a noisy pair scores lower than a clean one)."""
    from prefsift.scoring.diagnostics import auroc_evidence

    if "noise" not in df or df["noise"].isna().all():
        return []
    known = df["noise"].notna().to_numpy()
    noisy = df["noise"].fillna(False).to_numpy(bool)[known]
    rows = []
    for m in (*SCORES, "if"):
        if m in df:
            s = -df[m].to_numpy(np.float64)[known]  # low score flags noise
            ev = auroc_evidence(s, noisy, cfg.n_boot, cfg.seed, cfg.level)
            rows.append(_clean({"score": m, "flags": "low score = noisy", **ev}))
    return rows


def evidence(
    con,
    dataset: str,
    runs: dict | None = None,
    split: str | None = "train",
    selection: str | None = None,
    cfg: EvidenceConfig | None = None,
) -> dict:
    """Every diagnostic above for one dataset split (and a selection), JSON-ready."""
    from prefsift.storage.diagnose import evidence_frame

    cfg = cfg or EvidenceConfig()
    df, info = evidence_frame(con, dataset, runs, split, selection)
    return {
        "n_pairs": len(df),
        "n_with_if": int(df["if"].notna().sum()) if "if" in df else 0,  # fully truncated pairs have none
        "n_boot": cfg.n_boot,
        "seed": cfg.seed,
        "level": cfg.level,
        **info,
        "bands": band_rows(df, cfg),
        "correlations": correlation_rows(df, cfg),
        "length": length_rows(df, cfg),
        "noise_auroc": noise_rows(df, cfg),
    }


def num(x, fmt: str = ".3f") -> str:
    """A number for the text reports; a missing one (None, NaN) as n/a."""
    return "n/a" if x is None or x != x else format(x, fmt)


def _ci(r: dict, key: str) -> str:
    return f"{num(r.get(key))} [{num(r.get(key + '_lo'))}, {num(r.get(key + '_hi'))}]"


def format_evidence(ev: dict) -> str:
    """The evidence as text: one line per row, interval in brackets, chance beside it."""
    pe = ev.get("policy_eval")
    lines = [
        f"evidence ({ev['n_pairs']:,} pairs, {ev['n_with_if']:,} with IF; {int(100 * ev['level'])}% intervals: bootstrap, "
        f"{ev['n_boot']} resamples, seed {ev['seed']})"
    ]
    if pe:
        lines.append(
            f"  θ on {pe['split']} ({pe['n_pairs']} pairs): mean margin {num(pe['mean_margin'], '.4f')}, "
            f"reward accuracy {num(pe['reward_accuracy'])}, loss {num(pe['loss'], '.4f')} (ln 2 = 0.6931)"
        )
    else:
        lines.append("  θ has no evaluation recorded: run `prefsift evaluate` to see whether it moved")
    if ev["bands"]:
        lines.append("  overlap with TIF vs a random selection of the same size (chance, 95% null range):")
        for r in ev["bands"]:
            lines.append(
                f"    {r['band']:>6} {r['rule']:<13} {num(r['overlap'])}  chance {num(r['chance'])} "
                f"[{num(r['null_lo'])}, {num(r['null_hi'])}]  lift {num(r['lift'])}  kappa {num(r['kappa'])}  "
                f"p {num(r['p_value'], '.3g')}  (kept {r['n_a']}, TIF {r['n_b']}, n {r['n']})"
            )
    if ev["correlations"]:
        lines.append("  correlation with IF (|r| < 2/sqrt(n) is chance; partial: token counts held fixed):")
        for r in ev["correlations"]:
            if "pearson" not in r:
                lines.append(f"    {r['score']:<8} {r['subset']:<11} n={r['n']}: too few pairs")
                continue
            lines.append(
                f"    {r['score']:<8} {r['subset']:<11} n={r['n']:<5} Pearson {_ci(r, 'pearson')}  "
                f"Spearman {_ci(r, 'spearman')}  partial {_ci(r, 'partial_pearson')}  "
                f"chance |r| < {num(r['chance_abs_r'])}"
            )
    if ev["length"]:
        lines.append("  length confound (Spearman with token counts):")
        for r in ev["length"]:
            lines.append(f"    {r['score']:<8} {r['length']:<22} {_ci(r, 'spearman')}")
    if ev["noise_auroc"]:
        lines.append("  noisy-pair detection, AUROC of a low score (0.5 = chance):")
        for r in ev["noise_auroc"]:
            lines.append(
                f"    {r['score']:<8} {_ci(r, 'auroc')}  ({r['n_positive']} noisy, {r['n_negative']} clean)"
            )
    return "\n".join(lines)
