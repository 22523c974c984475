"""Chance levels and intervals against slow, independent references: every subset enumerated for
the hypergeometric null, pair counting for AUROC, the 2x2 table for kappa, the precision matrix
for partial correlations, loops for the vectorised bootstrap."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefsift.scoring import diagnostics as D
from prefsift.storage import chance as C


def all_subsets(n: int, a: int):
    for idx in itertools.combinations(range(n), a):
        m = np.zeros(n, bool)
        m[list(idx)] = True
        yield m


@pytest.mark.parametrize("n,a,t", [(8, 3, 5), (9, 6, 6), (7, 2, 2), (8, 5, 3)])
def test_overlap_null_equals_enumeration_of_every_random_selection(n, a, t):
    ref = np.zeros(n, bool)
    ref[:t] = True
    shared = np.array([(m & ref).sum() for m in all_subsets(n, a)])
    small = min(a, t)
    for both in range(shared.min(), shared.max() + 1):
        got = C.overlap_chance(n, a, t, both)
        assert got["chance"] == pytest.approx((shared / small).mean())  # = max(a, t) / n
        assert got["p_value"] == pytest.approx((shared >= both).mean())  # Fisher, one-sided
        assert got["lift"] == pytest.approx((both / small) / got["chance"])
    q_lo, q_hi = np.quantile(shared, [0.025, 0.975], method="inverted_cdf")
    got = C.overlap_chance(n, a, t, int(shared.min()))
    assert (got["null_lo"], got["null_hi"]) == (q_lo / small, q_hi / small)


def test_overlap_null_matches_a_permutation_simulation():
    """n = 64, |A| = 0.64 n, |T| = 0.8 n (docs/METHOD.md's example): expected overlap 0.80."""
    n, a, t = 64, 41, 51
    rng = np.random.default_rng(0)
    ref = np.zeros(n, bool)
    ref[:t] = True
    sims = np.array([(ref[rng.permutation(n)[:a]]).sum() / a for _ in range(20000)])
    got = C.overlap_chance(n, a, t, 35)
    assert got["chance"] == pytest.approx(51 / 64) == pytest.approx(sims.mean(), abs=0.003)
    lo, hi = np.quantile(sims, [0.025, 0.975])
    assert abs(got["null_lo"] - lo) <= 1 / a + 1e-9 and abs(got["null_hi"] - hi) <= 1 / a + 1e-9


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=40))
def test_kappa_equals_the_2x2_table(ab):
    a, b = (np.array(v) for v in zip(*ab))
    n = len(a)
    table = np.array([[(a & b).sum(), (a & ~b).sum()], [(~a & b).sum(), (~a & ~b).sum()]]) / n
    p_o = np.trace(table)
    p_e = table.sum(1) @ table.sum(0)
    got = C.kappa(n, int(a.sum()), int(b.sum()), int((a & b).sum()))
    if p_e == 1:
        assert math.isnan(got)
    else:
        assert got == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=40))
def test_auroc_equals_pair_counting(sp):
    s, pos = (np.array(v) for v in zip(*sp))
    s = s.astype(float)
    p, q = s[pos], s[~pos]
    if not len(p) or not len(q):
        assert math.isnan(D.auroc(s, pos))
        return
    ref = np.mean([(x > y) + 0.5 * (x == y) for x in p for y in q])
    assert D.auroc(s, pos) == pytest.approx(ref, abs=1e-12)
    assert D.auroc_rows(s[None], pos[None])[0] == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_partial_correlation_equals_the_precision_matrix(k):
    rng = np.random.default_rng(k)
    n = 80
    z = rng.normal(size=(n, k))
    x = z @ rng.normal(size=k) + rng.normal(size=n)
    y = z @ rng.normal(size=k) + 0.4 * x + rng.normal(size=n)
    prec = np.linalg.inv(np.corrcoef(np.column_stack([x, y, z]), rowvar=False))
    ref = -prec[0, 1] / np.sqrt(prec[0, 0] * prec[1, 1])
    assert D.partial_pearson(x, y, z) == pytest.approx(ref, abs=1e-10)
    assert D.partial_pearson_rows(x[None], y[None], z[None])[0] == pytest.approx(ref, abs=1e-10)


def test_vectorised_bootstrap_equals_a_loop_of_independent_references_and_is_seeded():
    """Each resample's statistic computed one at a time by a reference written here (numpy's
    corrcoef, pair counting, the precision matrix), against the vectorised interval."""
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=60), 1)
    y = x + rng.normal(size=60)
    pos = rng.random(60) < 0.3
    z = rng.integers(1, 9, size=(60, 2)).astype(float)

    def ranks(v):
        return np.array([(v < u).sum() + ((v == u).sum() + 1) / 2 for u in v])

    def pearson(a, b):
        return np.corrcoef(a, b)[0, 1] if np.ptp(a) and np.ptp(b) else np.nan

    def auroc(s, p):
        return (
            np.mean([(u > w) + 0.5 * (u == w) for u in s[p] for w in s[~p]])
            if p.any() and (~p).any()
            else np.nan
        )

    def partial(a, b, c):
        prec = np.linalg.inv(np.corrcoef(np.column_stack([a, b, c]), rowvar=False))
        return -prec[0, 1] / np.sqrt(prec[0, 0] * prec[1, 1])

    for ref, rows, cols in (
        (pearson, D.pearson_rows, (x, y)),
        (lambda a, b: pearson(ranks(a), ranks(b)), D.spearman_rows, (x, y)),
        (auroc, D.auroc_rows, (x, pos)),
        (partial, D.partial_pearson_rows, (x, y, z)),
    ):
        vals = np.array([ref(*(c[i] for c in cols)) for idx in D.bootstrap_indices(60, 300, 5) for i in idx])
        lo, hi = np.percentile(vals[np.isfinite(vals)], [2.5, 97.5])
        np.testing.assert_allclose(D.bootstrap_interval(rows, cols, 300, seed=5), (lo, hi), atol=1e-9)
    assert D.bootstrap_interval(D.pearson_rows, (x, y), 300, seed=5) != D.bootstrap_interval(
        D.pearson_rows, (x, y), 300, seed=6
    )


def test_correlation_interval_covers_the_truth_and_chance_level():
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=n)
    y = 0.5 * x + np.sqrt(1 - 0.25) * rng.normal(size=n)  # rho = 0.5
    ev = D.correlation_evidence(x, y, n_boot=500, seed=0)
    assert ev["pearson_lo"] < 0.5 < ev["pearson_hi"] and ev["pearson_hi"] - ev["pearson_lo"] < 0.25
    assert ev["chance_abs_r"] == pytest.approx(0.1)
    noise = D.correlation_evidence(x, rng.normal(size=n), n_boot=500, seed=0)
    assert noise["pearson_lo"] < 0 < noise["pearson_hi"]


def test_length_confound_and_partial_correlation_on_a_known_frame():
    """A score and IF both driven by response length: their raw correlation is large, the partial
    one (length held fixed) covers 0, and the length rows show the confound (bug 15d)."""
    from prefsift.evidence import EvidenceConfig, correlation_rows, length_rows

    rng = np.random.default_rng(1)
    n = 300
    chosen = rng.integers(5, 200, size=n)
    df = pd.DataFrame(
        {
            "prompt_tokens": rng.integers(5, 50, size=n),
            "chosen_tokens": chosen,
            "rejected_tokens": rng.integers(5, 200, size=n),
            "irm": chosen / 100 + 0.2 * rng.normal(size=n),
            "if": chosen / 100 + 0.2 * rng.normal(size=n),
        }
    )
    cfg = EvidenceConfig(n_boot=300)
    (row,) = correlation_rows(df, cfg)
    assert row["pearson_lo"] > 0.8 and row["partial_pearson_lo"] < 0 < row["partial_pearson_hi"]
    by = {(r["score"], r["length"]): r for r in length_rows(df, cfg)}
    assert by[("irm", "chosen_tokens")]["spearman_lo"] > 0.8
    assert by[("irm", "prompt_tokens")]["spearman_lo"] < 0 < by[("irm", "prompt_tokens")]["spearman_hi"]


def test_arm_bootstrap_pairs_arms_by_eval_pair_and_seed():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 50))  # (seeds, eval pairs)
    vals = {"random": base, "same": base.copy(), "shifted": base + 0.25, "theta": base[:1]}
    out = D.arm_bootstrap(vals, refs=("random",), n_boot=400, seed=0)
    # identical arms differ by exactly 0; a constant shift is recovered exactly (paired, not pooled)
    assert out["diffs"][("same", "random")] == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0}
    d = out["diffs"][("shifted", "random")]
    assert (
        d["diff"] == pytest.approx(0.25) and d["lo"] == pytest.approx(0.25) and d["hi"] == pytest.approx(0.25)
    )
    assert d["p"] == pytest.approx(2 / 401)  # the smallest p 400 replicates can give
    # each arm's interval contains its mean and is as wide as the spread over pairs and seeds says
    for r in out["arms"].values():
        assert r["lo"] <= r["mean"] <= r["hi"]
    r = out["arms"]["random"]
    se = base.mean(axis=0).std(ddof=1) / np.sqrt(50)
    assert 2 * 1.96 * se * 0.6 < r["hi"] - r["lo"] < 2 * 1.96 * se * 1.6
    assert out["arms"]["theta"]["n_seeds"] == 1
    assert D.arm_bootstrap(vals, ("random",), 400, 0) == out  # seeded
    with pytest.raises(ValueError, match="same eval pairs"):
        D.arm_bootstrap({"a": base, "b": base[:, :10]})


def test_influence_diagnostics_against_numpy_bands_and_the_enumerated_null():
    """`prefsift influence`'s summary: bands as numpy's percentiles (inclusive, NaN out), the
    overlap and its chance level recomputed here, one engine behind both (no second band)."""
    from prefsift.evidence import influence_diagnostics

    rng = np.random.default_rng(0)
    inf = rng.normal(size=500)
    lossdiff = inf + 0.5 * rng.normal(size=500)
    irm = rng.normal(size=500)
    irm[3] = np.nan

    def band(x):
        lo, hi = np.nanpercentile(x, [10, 90])
        return (x >= lo) & (x <= hi)

    d = influence_diagnostics(inf, {"lossdiff": lossdiff, "irm": irm})
    tif = band(inf)
    assert d["n_pairs"] == 500 and d["n_tif"] == tif.sum() == 400
    assert d["pearson_lossdiff"] == pytest.approx(np.corrcoef(inf, lossdiff)[0, 1])
    assert d["pearson_lossdiff"] > 0.8 and abs(d["pearson_irm"]) < 0.15
    for name, m in (
        ("lossdiff", band(lossdiff)),
        ("irm", band(irm)),
        ("lossdiff_irm", band(lossdiff) & band(irm)),
    ):
        assert d[f"n_kept_{name}"] == m.sum() and d[f"n_both_{name}"] == (m & tif).sum()
        assert d[f"overlap_{name}"] == pytest.approx((m & tif).sum() / min(m.sum(), tif.sum()))
        assert d[f"chance_{name}"] == pytest.approx(max(m.sum(), tif.sum()) / 500)
    assert d["overlap_lossdiff"] > d["overlap_irm"] and d["p_value_lossdiff"] < 1e-6 < d["p_value_irm"]


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (31, 48), (80, 128), (1, 1)])
def test_wilson_interval_is_where_the_score_test_stops_rejecting(k, n):
    """The Wilson interval's ends are the proportions p at which the score test's statistic
    |k/n - p| / sqrt(p (1 - p) / n) equals 1.96: checked on the defining equation, not a formula."""
    lo, hi = C.wilson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    for p in (lo, hi):
        if 0 < p < 1:
            assert abs(k / n - p) == pytest.approx(1.96 * math.sqrt(p * (1 - p) / n), rel=1e-9)
    assert (lo == 0) == (k == 0) and (hi == 1) == (k == n)
    assert all(math.isnan(v) for v in C.wilson(0, 0))
