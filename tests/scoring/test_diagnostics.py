"""Correlations and overlaps against independent references (brute force, numpy)."""

from __future__ import annotations

import numpy as np
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
    np.testing.assert_allclose(D.average_ranks_rows(x[None])[0], brute_ranks(x))
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
    tiny = np.array([1.0, 2.0, 4.0]) * 1e-200  # deviations whose squares underflow to 0 unscaled
    assert D.pearson(tiny, tiny) == pytest.approx(1.0) and D.spearman(tiny, -tiny) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="length"):
        D.pearson([1.0, 2.0], [1.0])


def test_overlap_coefficient():
    """|A ∩ B| / min(|A|, |B|): its one owner is storage.chance.overlap_chance (counts of masks)."""
    from prefsift.storage.chance import overlap_chance

    def overlap(a, b):
        return overlap_chance(a.size, int(a.sum()), int(b.sum()), int((a & b).sum()))["overlap"]

    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 1], bool)
    assert overlap(a, b) == pytest.approx(2 / 3)
    assert overlap(a, a) == 1.0
    assert np.isnan(overlap(a, np.zeros(5, bool)))
