"""Band calibration: the rank/matrix grid search equals a brute-force search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prefsift.config import CalibrationConfig
from prefsift.select import calibrate, calibrate_arrays
from prefsift.storage import connect


def _brute(l_, i_, f, cfg):
    n = len(l_)
    grid = np.arange(0, 100 + cfg.step / 2, cfg.step)
    has = np.isfinite(f)
    lo, hi = np.percentile(f[has], [cfg.tif_lo, cfg.tif_hi])
    tif = has & (f >= lo) & (f <= hi)
    tl = np.percentile(l_[np.isfinite(l_)], grid)
    ti = np.percentile(i_[np.isfinite(i_)], grid)
    best = (-1, None, None)
    with np.errstate(invalid="ignore"):
        for (a, b), (c, d) in itertools.product(
            itertools.combinations(range(len(grid)), 2), itertools.combinations(range(len(grid)), 2)
        ):
            keep = (l_ >= tl[a]) & (l_ <= tl[b]) & (i_ >= ti[c]) & (i_ <= ti[d])
            frac = keep.sum() / n
            if not (cfg.min_kept <= frac <= cfg.max_kept):
                continue
            denom = min((keep & has).sum(), tif.sum())
            ov = (keep & tif).sum() / denom if denom else 0.0
            if ov > best[0] + 1e-12 or (abs(ov - best[0]) <= 1e-12 and frac > best[2]):
                best = (ov, ((grid[a], grid[b]), (grid[c], grid[d])), frac)
    return best


@pytest.mark.parametrize("seed,sample", [(0, False), (1, True)])
def test_grid_equals_brute_force(seed, sample):
    rng = np.random.default_rng(seed)
    n = 150
    base = rng.normal(size=n)
    l_ = base + rng.normal(size=n)
    i_ = np.round(base + rng.normal(size=n), 1)  # ties
    f = base + 0.3 * rng.normal(size=n)
    l_[:4] = np.nan  # missing lossdiff: never kept
    if sample:
        f[rng.random(n) < 0.5] = np.nan  # IF on a sample only
    cfg = CalibrationConfig(min_kept=0.4, max_kept=0.7, step=10)
    got = calibrate_arrays(l_, i_, f, cfg)
    ov, bands, frac = _brute(l_, i_, f, cfg)
    assert got["overlap_tif"] == pytest.approx(ov)
    assert got["kept_fraction"] == pytest.approx(frac)
    # The chosen bands really reach the reported numbers.
    (a, b), (c, d) = got["bands"]["lossdiff"], got["bands"]["irm"]
    tl = np.percentile(l_[np.isfinite(l_)], [a, b])
    ti = np.percentile(i_, [c, d])
    with np.errstate(invalid="ignore"):
        keep = (l_ >= tl[0]) & (l_ <= tl[1]) & (i_ >= ti[0]) & (i_ <= ti[1])
    assert keep.mean() == pytest.approx(got["kept_fraction"])


def test_infeasible_range_and_config_errors():
    rng = np.random.default_rng(0)
    v = rng.normal(size=50)
    with pytest.raises(ValueError, match="keeps"):
        calibrate_arrays(v, v, v, CalibrationConfig(min_kept=0.999, max_kept=0.9999, step=50))
    with pytest.raises(ValueError):
        CalibrationConfig(min_kept=0.8, max_kept=0.2)
    with pytest.raises(ValueError):
        CalibrationConfig(step=7)
    with pytest.raises(ValueError, match="IF"):
        calibrate_arrays(v, v, np.full(50, np.nan), CalibrationConfig())


def test_calibrate_on_database_agrees_with_sql(syn):
    with connect(syn["db"]) as con:
        out = calibrate(con, "syn", CalibrationConfig(step=10))
    assert 0.5 <= out["rule_fraction"] <= 0.7
    assert out["rule_fraction"] == pytest.approx(out["kept_fraction"])
    assert out["overlap_tif"] > 0.5 and out["n_if"] == 180
