"""Correlations, percentile bands and overlaps against independent references (brute force, numpy, DuckDB)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefsift.scoring import diagnostics as D

# No subnormals or near-underflow values: there numpy's own corrcoef (the reference) loses precision.
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False).filter(
    lambda v: v == 0 or abs(v) > 1e-30
)


def brute_ranks(x):
    """Average 1-based ranks by counting: rank = #smaller + (#equal + 1) / 2."""
    x = np.asarray(x, dtype=float)
    return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])


def corr(x, y):
    return float(np.corrcoef(x, y)[0, 1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=3, max_size=40))
def test_spearman_with_ties_equals_brute_force(xy):
    x, y = (np.array(v, dtype=float) for v in zip(*xy))
    np.testing.assert_allclose(D.average_ranks(x), brute_ranks(x))
    ref = corr(brute_ranks(x), brute_ranks(y)) if x.std() > 0 and y.std() > 0 else np.nan
    got = D.spearman(x, y)
    assert (np.isnan(ref) and np.isnan(got)) or got == pytest.approx(ref, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=3, max_size=40))
def test_pearson_equals_numpy(xy):
    x, y = (np.array(v) for v in zip(*xy))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert np.isnan(D.pearson(x, y))
        return
    assert D.pearson(x, y) == pytest.approx(corr(x, y), abs=1e-9)


def test_nan_pairs_are_dropped_from_correlations():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 7.0])
    y = np.array([2.0, 1.0, 3.0, np.nan, 6.0, 8.0])
    keep = [0, 1, 4, 5]
    assert D.pearson(x, y) == pytest.approx(corr(x[keep], y[keep]))
    assert D.spearman(x, y) == pytest.approx(corr(brute_ranks(x[keep]), brute_ranks(y[keep])))
    assert np.isnan(D.pearson([1.0, np.nan], [np.nan, 2.0]))
    with pytest.raises(ValueError, match="length"):
        D.pearson([1.0, 2.0], [1.0])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.one_of(st.integers(-20, 20).map(float), st.just(float("nan"))), min_size=1, max_size=60),
    st.tuples(st.integers(0, 99), st.integers(1, 100)).filter(lambda t: t[0] < t[1]),
)
def test_band_equals_duckdb_quantile_cont(values, band):
    """The band keeps exactly what DuckDB's quantile_cont + BETWEEN keeps (the rules' SQL)."""
    lo, hi = band
    x = np.array(values)
    mask = D.band_mask(x, lo, hi)
    con = duckdb.connect()
    t = pd.DataFrame({"i": np.arange(x.size), "v": x})  # NaN -> NULL in DuckDB
    con.register("t", t)
    rows = con.execute(
        f"""WITH q AS (SELECT quantile_cont(v, {lo / 100!r}) AS a, quantile_cont(v, {hi / 100!r}) AS b FROM t)
        SELECT i FROM t, q WHERE v BETWEEN a AND b ORDER BY i"""
    ).fetchall()
    assert sorted(np.flatnonzero(mask).tolist()) == [r[0] for r in rows]


def test_band_strict_and_edges():
    x = np.arange(11, dtype=float)  # percentiles 10/90 land exactly on 1 and 9
    assert D.band_thresholds(x, 10, 90) == (1.0, 9.0)
    assert D.band_mask(x, 10, 90).sum() == 9  # inclusive: 1..9
    assert D.band_mask(x, 10, 90, inclusive=False).sum() == 7  # docs/METHOD.md's strict form: 2..8
    assert D.band_mask(x, 0, 100, inclusive=False).all()  # open ends keep the extremes
    assert not D.band_mask(np.array([np.nan, np.nan]), 10, 90).any()
    with pytest.raises(ValueError, match="band"):
        D.band_mask(x, 90, 10)


def test_overlap_coefficient():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 1], bool)
    assert D.overlap(a, b) == pytest.approx(2 / 3)
    assert D.overlap(a, a) == 1.0
    assert np.isnan(D.overlap(a, np.zeros(5, bool)))


def test_influence_diagnostics_keys_and_values():
    rng = np.random.default_rng(0)
    inf = rng.normal(size=500)
    lossdiff = inf + 0.5 * rng.normal(size=500)
    irm = rng.normal(size=500)
    irm[3] = np.nan
    d = D.influence_diagnostics(inf, {"lossdiff": lossdiff, "irm": irm})
    assert d["n_pairs"] == 500
    assert d["n_tif"] == D.band_mask(inf).sum() == 400
    assert d["pearson_lossdiff"] == pytest.approx(np.corrcoef(inf, lossdiff)[0, 1])
    assert d["pearson_lossdiff"] > 0.8 and abs(d["pearson_irm"]) < 0.15
    tif = D.band_mask(inf)
    both = D.band_mask(lossdiff) & D.band_mask(irm)
    assert d["overlap_lossdiff_irm"] == pytest.approx((both & tif).sum() / min(both.sum(), tif.sum()))
    # Selections that track IF overlap more with TIF than an unrelated one.
    assert d["overlap_lossdiff"] > d["overlap_irm"]
