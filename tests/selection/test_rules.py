"""Rules: text/dict round trips, and the engine's semantics at the edges (storage/engine.py)."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefsift.storage import connect, engine
from prefsift.storage import rules as R
from prefsift.storage.pairs import assign_splits

from .conftest import seed_db

TEXTS = [
    "lossdiff:10-90 & irm:10-90",
    "if:10-90",
    "random:0.6:seed=0",
    "random:0.25:seed=7",
    "top:irm:1000",
    "bottom:lossdiff:500",
    "irm:v0-5",
    "irm:v-5.5--0.25",
    "irm:v-inf-0",
    "irm:v1e-3-2.5",
    "tif:v1-1",
    "if:2.5-97.5 & random:0.5:seed=3 & top:irm:10",
]


@pytest.mark.parametrize("text", TEXTS)
def test_text_and_dict_round_trip(text):
    rule = R.parse_rule(text)
    assert R.parse_rule(rule.to_text()) == rule
    assert R.rule_from_dict(R.to_dict(rule)) == rule
    import json

    assert R.rule_from_dict(json.loads(json.dumps(R.to_dict(rule)))) == rule


def test_parse_meanings():
    assert R.parse_rule("lossdiff:10-90 & irm:10-90") == R.DEFAULT_RULE
    assert R.parse_rule("irm:v-5.5--0.25") == R.Band("irm", -5.5, -0.25, "value")
    assert R.parse_rule("irm:v0.0-5.0") == R.Band("irm", 0.0, 5.0, "value")
    assert R.parse_rule("bottom:lossdiff:500") == R.Top("lossdiff", 500, largest=False)
    assert R.parse_rule("random:0.6") == R.RandomFraction(0.6, 0)
    assert R.parse_rule("tif") == R.TIF_FLAG_RULE
    assert R.parse_rule(" irm : 10 - 90 ") == R.Band("irm", 10, 90)


@given(
    lo=st.floats(-1e6, 1e6, allow_nan=False),
    width=st.floats(0, 1e6, allow_nan=False),
    pct=st.tuples(st.floats(0, 100), st.floats(0, 100)),
)
@settings(max_examples=200, deadline=None)
def test_band_text_round_trip_property(lo, width, pct):
    b = R.Band("irm", lo, lo + width, "value")
    assert R.parse_rule(b.to_text()) == b
    p = R.Band("lossdiff", min(pct), max(pct))
    assert R.parse_rule(p.to_text()) == p


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "irm",
        "irm:90-10",
        "irm:10-190",
        "foo:bar",
        "random:2",
        "random:0.5:sed=1",
        "top:irm:-1",
        "top:irm",
        "irm:10-90 &",
        "1bad:10-90",
        "irm:nan-1",
        "top:irm:1.5",
    ],
)
def test_parse_errors_are_rule_errors(bad):
    with pytest.raises(R.RuleError):
        R.parse_rule(bad)


def test_constructor_validation():
    with pytest.raises(R.RuleError):
        R.Intersect((R.DEFAULT_RULE,))
    with pytest.raises(R.RuleError):
        R.Intersect(())
    with pytest.raises(R.RuleError):
        R.Band("irm", 1, 2, mode="pct")
    with pytest.raises(R.RuleError):
        R.rule_from_dict({"type": "band", "metric": "irm"})


def test_sql_percentile_equals_numpy_on_random_data():
    con = duckdb.connect()
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 101, 1000, 4099):
        v = rng.standard_t(3, size=n) * 10.0 ** rng.integers(-3, 4)
        qs = sorted(rng.uniform(0, 100, size=4).tolist()) + [0.0, 10.0, 90.0, 100.0]
        got = con.execute(
            "SELECT quantile_cont(x, ?) FROM (SELECT unnest(?::DOUBLE[]) x)",
            [[q / 100 for q in qs], v.tolist()],
        ).fetchone()[0]
        np.testing.assert_allclose(got, np.percentile(v, qs), rtol=1e-12, atol=0)


def _ev(db, rule, read_only=False, **kw):
    with connect(db, read_only=read_only) as con:
        ev = engine.select(con, "syn", rule, **kw)
    ids = set(ev.ids())
    assert ev.result.n_kept == len(ids)
    return ev.result, ids


def test_band_matches_numpy(syn):
    train = syn["split"] == "train"
    for metric, lo, hi in [("irm", 10, 90), ("lossdiff", 25, 60), ("if", 0, 37.5)]:
        res, ids = _ev(syn["db"], R.Band(metric, lo, hi))
        v = syn["scores"][metric]
        t_lo, t_hi = np.percentile(v[train], [lo, hi])
        info = res.resolved[f"{metric}:{lo:g}-{hi:g}"]
        assert info["lo"] == pytest.approx(t_lo, rel=1e-12) and info["hi"] == pytest.approx(t_hi, rel=1e-12)
        want = set(syn["ids"][train & (v >= info["lo"]) & (v <= info["hi"])])
        assert ids == want
        assert res.n_total == train.sum() and res.n_missing == 0


def test_intersection_is_and_of_parts(syn):
    _, both = _ev(syn["db"], R.DEFAULT_RULE)
    _, a = _ev(syn["db"], R.Band("lossdiff", 10, 90))
    _, b = _ev(syn["db"], R.Band("irm", 10, 90))
    assert both == a & b and len(both) > 0


def test_ties_at_threshold_are_kept(db_path):
    # 20 train pairs: values 0,1,1,...,1 (10 ones),2..: the 10th percentile and a value bound land on ties.
    n = 30
    v = np.array([0.0] + [1.0] * 12 + list(np.arange(2, n - 11, dtype=float)))[:n]
    v = np.resize(v, n)
    info = seed_db(db_path, n=n, scores={"irm": v, "lossdiff": v, "if": v})
    train = info["split"] == "train"
    vt = v[train]
    thr = np.percentile(vt, 10)
    assert thr == 1.0  # the threshold is exactly the tied value
    res, ids = _ev(db_path, R.Band("irm", 10, 90))
    assert res.resolved["irm:10-90"]["lo"] == 1.0
    ones = set(info["ids"][train & (v == 1.0)])
    assert ones <= ids  # every tie at the lower threshold is kept (inclusive)
    res_v, ids_v = _ev(db_path, R.Band("irm", 1.0, 1.0, "value"))
    assert ids_v == ones


def test_nan_and_missing_scores_are_reported_and_dropped(db_path):
    info = seed_db(db_path, n=100, nan_rows=4)
    train = info["split"] == "train"
    v = info["scores"]["irm"].copy()
    lacking = train & (np.isnan(v) | ~info["keep_rows"]["irm"])
    res, ids = _ev(db_path, R.Band("irm", 0, 100))
    assert res.n_missing == lacking.sum() == res.missing["irm"] > 0
    assert res.n_kept == res.n_total - res.n_missing  # 0-100 keeps every scored pair, no missing one
    assert not ids & set(info["ids"][lacking])
    # Percentiles ignore the missing scores.
    ok = train & ~lacking
    res2, _ = _ev(db_path, R.Band("irm", 10, 90))
    assert res2.resolved["irm:10-90"]["lo"] == pytest.approx(np.percentile(v[ok], 10), rel=1e-12)
    # Top-k and intersections never pick a missing pair either.
    _, top = _ev(db_path, R.Top("irm", 10_000))
    assert len(top) == ok.sum()
    # A rule that reads no score has nothing missing.
    res3, _ = _ev(db_path, R.RandomFraction(1.0))
    assert res3.n_missing == 0 and res3.n_kept == res3.n_total


def test_band_keeping_everything_and_empty_results(syn):
    res, ids = _ev(syn["db"], R.Band("irm", 0, 100))
    assert res.n_kept == res.n_total == (syn["split"] == "train").sum()
    res, ids = _ev(syn["db"], R.Band("irm", 1e9, 2e9, "value"))
    assert res.n_kept == 0 and ids == set()
    for rule in (R.Top("irm", 0), R.RandomFraction(0.0), R.Band("if", 1e9, 2e9, "value")):
        assert _ev(syn["db"], rule)[0].n_kept == 0
    with connect(syn["db"]) as con:
        assert engine.select(con, "syn", R.Top("irm", 0)).ids() == []
        # A split with no pairs: everything zero, nothing breaks.
        res = engine.select(con, "syn", R.DEFAULT_RULE, split="eval").result
    assert (res.n_kept, res.n_total) == (0, 0)


def test_top_and_bottom_exact_k_with_ties(db_path):
    n = 50
    v = np.repeat(np.arange(10, dtype=float), 5)  # 5 ties of each value
    info = seed_db(db_path, n=n, scores={"irm": v, "lossdiff": -v, "if": v})
    train = info["split"] == "train"
    res, ids = _ev(db_path, R.Top("irm", 7))
    assert res.n_kept == 7
    ids_sorted = sorted(zip(-v[train], info["ids"][train]))
    assert ids == {pid for _, pid in ids_sorted[:7]}  # by value, ties broken by pair_id
    res, ids = _ev(db_path, R.Top("lossdiff", 3, largest=False))
    low = sorted(zip(-v[train], info["ids"][train]))[:3]  # smallest lossdiff, ties by pair_id
    assert res.n_kept == 3 and ids == {pid for _, pid in low}
    assert res.resolved["bottom:lossdiff:3"]["value"] == -9.0
    res, ids = _ev(db_path, R.Top("irm", 10_000))
    assert ids == set(info["ids"][train]) and res.resolved["top:irm:10000"]["all_scored"]


def test_random_fraction_seeded_exact_and_order_independent(tmp_path):
    a = seed_db(tmp_path / "a.duckdb", n=300)
    order = np.random.default_rng(5).permutation(300)
    seed_db(tmp_path / "b.duckdb", n=300, order=order)
    ra, ia = _ev(tmp_path / "a.duckdb", R.RandomFraction(0.3, seed=4))
    rb, ib = _ev(tmp_path / "b.duckdb", R.RandomFraction(0.3, seed=4))
    assert ia == ib and ra.n_kept == round(0.3 * ra.n_total)
    # Reproducible outside DuckDB: the smallest md5(pair_id:seed) (low 8 bytes, little-endian).
    train_ids = a["ids"][a["split"] == "train"]

    def h(pid):
        return int.from_bytes(hashlib.md5(f"{pid}:4".encode()).digest()[8:], "little")

    assert ia == set(sorted(train_ids, key=lambda p: (h(p), p))[: ra.n_kept])
    _, other_seed = _ev(tmp_path / "a.duckdb", R.RandomFraction(0.3, seed=5))
    assert other_seed != ia


def test_annotations_force_keep_and_drop(syn):
    _, base = _ev(syn["db"], R.DEFAULT_RULE)
    train_ids = set(syn["ids"][syn["split"] == "train"])
    drop = sorted(base)[0]
    keep = sorted(train_ids - base)[0]
    from prefsift.storage.annotations import save_decision

    with connect(syn["db"]) as con:
        save_decision(con, "syn", drop, "a", force="drop")
        save_decision(con, "syn", keep, "a", force="keep")
        save_decision(con, "syn", sorted(base)[1], "a", force=None)
    res, ids = _ev(syn["db"], R.DEFAULT_RULE)
    assert ids == (base - {drop}) | {keep}
    assert (res.forced_keep, res.forced_drop, res.with_annotations) == (1, 1, True)
    res2, ids2 = _ev(syn["db"], R.DEFAULT_RULE, with_annotations=False)
    assert ids2 == base and res2.forced_keep == 0


def test_deterministic_and_read_only(syn):
    r1, i1 = _ev(syn["db"], R.DEFAULT_RULE)
    r2, i2 = _ev(syn["db"], R.DEFAULT_RULE, read_only=True)
    assert r1 == r2 and i1 == i2


def test_follows_split_changes_and_new_runs(syn):
    import pyarrow as pa

    from prefsift.storage.runs import save_score_run

    r1, _ = _ev(syn["db"], R.Band("irm", 0, 100))
    train = syn["ids"][syn["split"] == "train"]
    with connect(syn["db"]) as con:
        assign_splits(con, "syn", pa.table({"pair_id": list(train[:5]), "split": ["val"] * 5}))
    r2, ids2 = _ev(syn["db"], R.Band("irm", 0, 100))
    assert r2.n_total == r1.n_total - 5 and not ids2 & set(train[:5])
    with connect(syn["db"]) as con:
        save_score_run(
            con, "irm-2", "syn", "irm", {}, pa.table({"pair_id": list(train[5:15]), "value": [1.0] * 10})
        )
    r3, ids3 = _ev(syn["db"], R.Band("irm", 0, 100))
    assert r3.runs == {"irm": "irm-2"} and ids3 == set(train[5:15]) and r3.n_missing == r3.n_total - 10
    r4, _ = _ev(syn["db"], R.Band("irm", 0, 100), runs={"irm": "syn-irm"})
    assert r4.runs == {"irm": "syn-irm"} and r4.n_kept == r2.n_kept


def test_unknown_metric_and_run_are_clear_errors(syn):
    from prefsift.storage.errors import NotFound

    with connect(syn["db"]) as con:
        with pytest.raises(NotFound, match="tif"):
            engine.select(con, "syn", "tif")
        with pytest.raises(NotFound, match="nope"):
            engine.select(con, "syn", R.DEFAULT_RULE, runs={"irm": "nope"})
        with pytest.raises(NotFound, match="dataset"):
            engine.select(con, "nodata", R.DEFAULT_RULE)


def test_missing_union_over_two_metrics_and_split_swap_detection(db_path):
    import pyarrow as pa

    from prefsift.storage.runs import save_score_run

    info = seed_db(db_path, n=100, nan_rows=3)  # irm: 3 NaN + 3 absent (pairs 1-6)
    ids = info["ids"]
    train = info["split"] == "train"
    with connect(db_path) as con:
        keep = [i for i in range(100) if i not in (5, 6, 7, 8)]  # lossdiff absent for 5-8
        save_score_run(
            con, "ld2", "syn", "lossdiff", {}, pa.table({"pair_id": ids[keep], "value": np.arange(96.0)})
        )
    lacking = train & np.isin(np.arange(100), [1, 2, 3, 4, 5, 6, 7, 8])
    res, ids_kept = _ev(db_path, R.DEFAULT_RULE)
    assert res.n_missing == lacking.sum() and res.missing == {"lossdiff": 4, "irm": 6}
    # Swap one train and one val pair: same split sizes, the evaluation must follow.
    t_id, v_id = ids[train][-1], ids[~train][-1]
    with connect(db_path) as con:
        assign_splits(con, "syn", pa.table({"pair_id": [t_id, v_id], "split": ["val", "train"]}))
    res2, kept2 = _ev(db_path, R.Band("lossdiff", 0, 100))
    assert res2.n_total == res.n_total and t_id not in kept2 and v_id in kept2


def test_all_splits(syn):
    res_all, ids_all = _ev(syn["db"], R.Band("irm", 0, 100), split=None)
    assert res_all.n_total == 200 and ids_all == set(syn["ids"])


def test_percentiles_equal_duckdb_quantile_cont(syn):
    """The oracle: the engine's thresholds are DuckDB's quantile_cont over the split's scores."""
    rules = [
        R.Band(m, lo, hi)
        for m in ("irm", "if")
        for lo, hi in ((0, 100), (1, 99), (7, 64), (33, 34), (50, 50), (12.5, 87.25))
    ]
    with connect(syn["db"], read_only=True) as con:
        got = [engine.select(con, "syn", r).result for r in rules]
        fresh = [
            con.execute(
                f"SELECT quantile_cont(CASE WHEN isnan(value) THEN NULL ELSE value END, [{r.lo / 100!r}, {r.hi / 100!r}]) "
                "FROM scores s JOIN pairs p ON p.pair_id = s.pair_id AND p.dataset = 'syn' "
                f"WHERE s.run_id = 'syn-{r.metric}' AND p.split = 'train'"
            ).fetchall()[0][0]
            for r in rules
        ]
    for r, c, f in zip(rules, got, fresh):
        info = c.resolved[r.to_text()]
        np.testing.assert_allclose([info["lo"], info["hi"]], f, rtol=1e-14, atol=1e-300)
