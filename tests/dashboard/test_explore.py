"""storage.explore and its Snapshot, checked against plain pandas/numpy on the seeded database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from prefsift.storage import connect, engine, explore, explore_snapshot
from prefsift.storage.explore import Filters
from prefsift.storage.pair_lists import scored_filters
from tests.annotate import save_annotation


@pytest.fixture(scope="module")
def snap(seeded):
    with connect(seeded["db"], read_only=True) as con:
        s = explore.Snapshot(con, seeded["dataset"])
        for run in seeded["runs"].values():
            s.load_run(con, run)
    return s


@pytest.fixture(scope="module")
def wide(seeded):
    """The reference: pairs + every run as a column, pivoted here from the long scores table
    (get_scores is built on Snapshot, so it cannot be the reference for it)."""
    from prefsift.storage.pairs import get_pairs

    with connect(seeded["db"], read_only=True) as con:
        pairs = get_pairs(con, seeded["dataset"]).to_pandas()
        long = con.execute("SELECT pair_id, run_id, value FROM scores").df()
    scores = long.pivot(index="pair_id", columns="run_id", values="value")
    scores = scores.rename(columns={r: k for k, r in seeded["runs"].items()})[list(seeded["runs"])]
    return pairs.merge(scores.reset_index(), on="pair_id", how="left")


def test_snapshot_aligns_every_run(snap, wide, seeded):
    ids = snap.ids.to_pylist()
    ref = wide.set_index("pair_id").loc[ids]
    for name, run in seeded["runs"].items():
        np.testing.assert_array_equal(snap.load_run_values(run), ref[name].to_numpy())


def test_get_scores_is_the_wide_pivot(wide, seeded):
    """get_scores: a row per pair scored by some run, a column per metric (name order), by pair_id."""
    from prefsift.storage.engine import get_scores

    names = sorted(seeded["runs"])
    with connect(seeded["db"], read_only=True) as con:
        got = get_scores(con, seeded["dataset"], seeded["runs"])
    ref = wide.dropna(subset=names, how="all")[["pair_id", *names]].sort_values("pair_id", ignore_index=True)
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)


def test_partial_run_leaves_missing_as_nan(tmp_path):
    from synth import make_db

    from prefsift.storage.runs import save_score_run

    db = tmp_path / "p.duckdb"
    info = make_db(db, n=50, payloads=False)
    some = info["pair_ids"][:20]
    with connect(db) as con:
        save_score_run(
            con, "partial", info["dataset"], "irm", {}, pa.table({"pair_id": some, "value": np.arange(20.0)})
        )
        s = explore.Snapshot(con, info["dataset"])
        v = s.load_run(con, "partial")
    assert np.isnan(v).sum() == 30
    pos = s.positions(s.hash_ids(some))
    np.testing.assert_array_equal(v[pos], np.arange(20.0))
    assert s.count(["partial"], scored_filters("partial")) == 20


def test_histogram_matches_numpy(snap, wide, seeded):
    run = seeded["runs"]["irm_a"]
    h = snap.histogram(run, 20, Filters(split="train"))
    x = wide.loc[wide["split"] == "train", "irm_a"].to_numpy()
    assert h["count"].sum() == len(x)
    counts, edges = np.histogram(x, bins=20, range=(x.min(), x.max()))
    full = np.zeros(20, int)
    idx = np.round((h["bin_lo"] - x.min()) / (edges[1] - edges[0])).astype(int)
    full[idx] = h["count"]
    # numpy's last bin is closed; so is ours (the max value is clamped into the last bin)
    np.testing.assert_array_equal(full, counts)


def test_scatter_sample_is_deterministic_and_filtered(snap, seeded):
    r = seeded["runs"]
    a = snap.scatter_sample(r["lossdiff_a"], r["irm_a"], r["tif_a"], 50)
    b = snap.scatter_sample(r["lossdiff_a"], r["irm_a"], r["tif_a"], 50)
    assert len(a) == 50 and list(a["pair_id"]) == list(b["pair_id"])
    assert set(a["color"].unique()) <= {0.0, 1.0}
    noisy = snap.scatter_sample(r["lossdiff_a"], r["irm_a"], None, 1000, Filters(noise=True))
    assert noisy["noise"].all() and noisy["color"].isna().all()
    # The sample under a filter is a subset of the same hash order: first noisy ones of the full order.
    full = snap.scatter_sample(r["lossdiff_a"], r["irm_a"], None, 10_000)
    assert list(full[full["noise"]]["pair_id"]) == list(noisy["pair_id"])


def test_bins_2d_counts_every_pair(snap, seeded):
    r = seeded["runs"]
    b = snap.bins_2d(r["lossdiff_a"], r["irm_a"], 10, Filters(split="train"))
    assert b["count"].sum() == snap.count([], Filters(split="train"))
    assert (b["x_hi"] > b["x_lo"]).all()


def test_page_matches_pandas_sort_and_ranges(snap, wide, seeded):
    r = seeded["runs"]
    runs = [r["irm_a"], r["lossdiff_a"]]
    f = Filters(split="train", ranges=((r["irm_a"], -0.5, 1.0),))
    page = snap.page(runs, f, order_run=r["irm_a"], descending=True, limit=10, offset=5)
    ref = wide[(wide["split"] == "train") & wide["irm_a"].between(-0.5, 1.0)].sort_values(
        "irm_a", ascending=False
    )
    assert list(page["pair_id"]) == list(ref["pair_id"].iloc[5:15])
    np.testing.assert_allclose(page["v1"], ref["lossdiff_a"].iloc[5:15])
    assert snap.count(runs, f) == len(ref)
    assert len(snap.page(runs, limit=10**6)) == min(explore.MAX_LIMIT, snap.n)


def test_text_search_is_literal_and_parameterised(seeded, snap):
    with connect(seeded["db"], read_only=True) as con:
        m = snap.load_text(con, "<SCRIPT>alert")  # any case
        evil = snap.load_text(con, "'; DROP TABLE pairs; --")
        pct = snap.load_text(con, "100%")
        assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == snap.n
    assert m.sum() == 1 and snap.ids[int(np.flatnonzero(m)[0])].as_py() == seeded["xss_pair"]
    assert evil.sum() == 0 and pct.sum() == 0
    assert explore_snapshot.like_pattern("a%b_c\\") == "%a\\%b\\_c\\\\%"
    assert snap.count([], Filters(text="<SCRIPT>alert")) == 1


def test_disagreements_and_correlation_match_pandas(snap, wide, seeded):
    r = seeded["runs"]
    d = snap.disagreements(r["irm_a"], r["lossdiff_a"], limit=5)
    ref = wide[["pair_id", "irm_a", "lossdiff_a"]].copy()
    n = len(ref)
    ref["ra"] = (ref["irm_a"].rank(method="min") - 1) / (n - 1)  # SQL percent_rank
    ref["rb"] = (ref["lossdiff_a"].rank(method="min") - 1) / (n - 1)
    ref["gap"] = (ref["ra"] - ref["rb"]).abs()
    top = ref.sort_values(["gap", "pair_id"], ascending=[False, True]).head(5)
    assert list(d["pair_id"]) == list(top["pair_id"])
    np.testing.assert_allclose(d["rank_a"], top["ra"])
    c = snap.rank_correlation(r["irm_a"], r["irm_b"])
    assert c["n"] == n
    assert c["spearman"] == pytest.approx(wide["irm_a"].rank().corr(wide["irm_b"].rank()), abs=1e-9)
    assert c["pearson"] == pytest.approx(wide["irm_a"].corr(wide["irm_b"]), abs=1e-9)
    with pytest.raises(ValueError):
        snap.disagreements(r["irm_a"], r["lossdiff_a"], direction="sideways")


def test_verdict_flips_counts(snap, seeded):
    r = seeded["runs"]
    counts, flips = explore.verdict_flips(snap, r["irm_a"], r["irm_b"], 10, 90, limit=1000)
    assert counts["both"] + counts["a_only"] + counts["b_only"] + counts["neither"] == counts["n"] == snap.n
    assert len(flips) == counts["a_only"] + counts["b_only"]
    assert (flips["keep_a"] != flips["keep_b"]).all()
    assert counts["a_only"] > 0 and counts["b_only"] > 0  # two models disagree on some pairs


@pytest.mark.parametrize(
    "bands",
    [
        [("lossdiff", 10, 90), ("irm", 10, 90)],
        [("lossdiff", 25, 75)],
        [("irm", 0, 100), ("if", 5, 60)],
    ],
)
def test_tune_is_the_engines_selection(seeded, snap, bands):
    from prefsift.storage import rules as R

    r = seeded["runs"]
    run_of = {"lossdiff": r["lossdiff_a"], "irm": r["irm_a"], "if": r["if_a"]}
    rule = R.Intersect(tuple(R.Band(m, lo, hi) for m, lo, hi in bands))
    runs = {m: run_of[m] for m, *_ in bands}
    live = explore.tune(snap, rule.to_text(), runs, "train")
    with connect(seeded["db"], read_only=True) as con:
        ev = engine.select(con, seeded["dataset"], rule, runs=runs)
    res, ids = ev.result, set(ev.ids())
    assert (live["n_kept"], live["n_total"], live["n_missing"]) == (res.n_kept, res.n_total, res.n_missing)
    kept_ids = {snap.ids[int(i)].as_py() for i in np.flatnonzero(live["kept_mask"])}
    assert kept_ids == ids
    h = live["hist"]
    assert h.groupby("run")[["kept"]].sum()["kept"].eq(live["n_kept"]).all()


def test_tune_applies_forced_annotations(seeded, snap):
    r = seeded["runs"]
    bands = ("irm:40-60", {"irm": r["irm_a"]})
    base = explore.tune(snap, *bands, "train")
    kept = np.flatnonzero(base["kept_mask"])
    dropped = np.flatnonzero(~base["kept_mask"] & snap.split_mask("train"))
    forced = {
        snap.ids[int(kept[0])].as_py(): "drop",
        snap.ids[int(dropped[0])].as_py(): "keep",
        snap.ids[int(dropped[1])].as_py(): "keep",
    }
    out = explore.tune(snap, *bands, "train", forced=forced)
    assert out["n_kept"] == base["n_kept"] + 1


def test_value_band_and_overlap(snap, seeded):
    r = seeded["runs"]
    tif = snap.load_run_values(r["tif_a"]) == 1
    out = explore.tune(snap, "tif:v1-1", {"tif": r["tif_a"]}, "train", compare={"TIF": tif})
    assert out["n_kept"] == int((tif & snap.split_mask("train")).sum())
    assert out["overlaps"]["TIF"]["both"] == out["n_kept"]


def test_random_baseline_is_the_random_rules_draw(snap, seeded, wide):
    """Tune's same-size random baseline is the draw of the saved `random:` rule: the train pairs
    with the smallest md5(pair_id:seed), recomputed here with hashlib and pandas (apart from the
    snapshot), and on a second, fresh snapshot (a cached order compared with itself could not fail)."""
    import hashlib

    r = seeded["runs"]
    out = explore.tune(snap, "tif:v1-1", {"tif": r["tif_a"]}, "train")
    n = out["n_kept"]
    train = wide[wide["split"] == "train"]

    def h(pid, seed=0):
        return int.from_bytes(hashlib.md5(f"{pid}:{seed}".encode()).digest()[8:], "little")

    drawn = sorted(train["pair_id"], key=lambda p: (h(p), p))[:n]
    members = train.set_index("pair_id").loc[drawn]
    assert 0 < n < len(train) and out["random"]["n"] == n == len(members)
    assert out["random"]["noisy"] == int(members["noise"].sum())
    kept_ids = set(train.loc[train["tif_a"] == 1, "pair_id"])  # what the rule keeps, in pandas
    assert out["random"]["both"] == len(kept_ids & set(drawn))
    with connect(seeded["db"], read_only=True) as con:
        fresh = explore.Snapshot(con, seeded["dataset"])
        fresh.load_run(con, r["tif_a"])
        # the saved rule of the same size draws the same pairs
        same = engine.select(con, seeded["dataset"], f"random:{n / len(train)!r}").ids()
        other = engine.select(con, seeded["dataset"], f"random:{n / len(train)!r}:seed=1").ids()
    assert explore.tune(fresh, "tif:v1-1", {"tif": r["tif_a"]}, "train")["random"] == out["random"]
    assert same == sorted(drawn) and len(other) == n and other != same


def test_filters_validate():
    with pytest.raises(ValueError):
        Filters(split="test")
    with pytest.raises(ValueError):
        Filters(ranges=(("r", 2.0, 1.0),))


def test_file_queries(seeded):
    from prefsift.storage.selections import create_selection, member_ids

    ds = seeded["dataset"]
    with connect(seeded["db"]) as con:
        runs = explore.score_runs(con, ds)
        assert set(runs["policy"]) == {"theta_a", "theta_b"} and runs["label"].str.contains("·").all()
        pv = explore.previews(con, ds, seeded["pair_ids"][:3], chars=10)
        assert set(pv["pair_id"]) == set(seeded["pair_ids"][:3]) and pv["chosen"].str.len().max() <= 10
        prev, nxt = explore.neighbour_ids(con, ds, seeded["pair_ids"][1])
        assert (prev, nxt) == (seeded["pair_ids"][0], seeded["pair_ids"][2])
        assert explore.neighbour_ids(con, ds, None) == (None, seeded["pair_ids"][0])
        pid = seeded["pair_ids"][5]
        save_annotation(con, ds, pid, "noisy label", "swapped?", "drop")
        assert explore.get_annotation(con, ds, pid)["force"] == "drop"
        assert engine.forced_annotations(con, ds) == {pid: "drop"}
        save_annotation(con, ds, pid, None, None, None)
        assert explore.get_annotation(con, ds, pid) is None
        with pytest.raises(ValueError):
            save_annotation(con, ds, pid, None, None, "maybe")
        create_selection(con, "fate-test", ds, "irm:0-50", runs={"irm": seeded["runs"]["irm_a"]}, force=True)
        fates = explore.pair_fates(con, ds, pid)
        kept = pid in member_ids(con, "fate-test")
        assert fates.set_index("selection").loc["fate-test", "kept"] == kept
        with pytest.raises(ValueError):
            explore.overview_table(con, "pairs; DROP TABLE pairs")
        assert len(explore.overview_table(con, "selections", ds)) >= 1
        con.execute("DELETE FROM selection_members WHERE selection = 'fate-test'")
        con.execute("DELETE FROM selections WHERE name = 'fate-test'")


def test_policy_of_reads_every_config_shape():
    names = {"fp1": "theta", "/m/theta": "theta"}
    assert explore.policy_of('{"models": {"policy": "fp1", "ref": "fp0"}}', names) == "theta"
    assert explore.policy_of({"policy": {"path": "/m/theta", "revision": None}}, names) == "theta"
    assert explore.policy_of({"policy": "other"}, names) == "other"
    assert explore.policy_of({"policy_name": "x", "policy": "y"}) == "x"
    assert explore.policy_of("not json") is None and explore.policy_of(None) is None
