"""Stored selections and their diagnostics."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prefsift.storage import connect, engine
from prefsift.storage import rules as R
from prefsift.storage.diagnose import diagnose
from prefsift.storage.errors import NotFound
from prefsift.storage.selections import (
    SelectionExists,
    create_selection,
    get_selection,
    list_selections,
    member_ids,
    overlap,
    save_selection,
)


def _ids(con, name):
    get_selection(con, name)  # NotFound for an unknown selection
    return set(member_ids(con, name))


def test_create_get_list_replace(syn):
    with connect(syn["db"]) as con:
        sel = create_selection(con, "ld", "syn")
        assert sel["rule_text"] == R.DEFAULT_RULE.to_text() and sel["split"] == "train"
        assert sel["score_runs"] == {"lossdiff": "syn-lossdiff", "irm": "syn-irm"}
        assert set(sel["resolved"]["thresholds"]) == {"lossdiff:10-90", "irm:10-90"}
        assert sel["n_kept"] == len(_ids(con, "ld")) and sel["n_total"] == 180
        with pytest.raises(SelectionExists):
            create_selection(con, "ld", "syn", "random:0.5")
        assert _ids(con, "ld") == set(engine.select(con, "syn", R.DEFAULT_RULE).ids())
        create_selection(con, "ld", "syn", "random:0.5", force=True)
        assert get_selection(con, "ld")["rule_text"] == "random:0.5:seed=0"
        df = list_selections(con, "syn")
        assert list(df["name"]) == ["ld"] and df["rule"][0] == "random:0.5:seed=0"
        # replacing kept only the new members
        n = con.execute("SELECT count(*) FROM selection_members").fetchone()[0]
        assert n == get_selection(con, "ld")["n_kept"] == len(_ids(con, "ld"))
        with pytest.raises(NotFound):
            get_selection(con, "nope")
        with pytest.raises(Exception, match="bad selection name"):
            create_selection(con, "../x", "syn")


def test_stored_rule_on_stored_runs_reproduces_members(syn):
    import pyarrow as pa

    from prefsift.storage.runs import save_score_run

    with connect(syn["db"]) as con:
        sel = create_selection(con, "ld", "syn")
        before = _ids(con, "ld")
        # A newer irm run appears: the stored runs still reproduce the stored members.
        ids = list(syn["ids"])
        save_score_run(
            con, "irm-new", "syn", "irm", {}, pa.table({"pair_id": ids, "value": np.arange(200.0)})
        )
        again = engine.select(
            con, "syn", R.rule_from_dict(sel["rule"]), runs=sel["score_runs"], split=sel["split"]
        )
        assert set(again.ids()) == before
        latest = engine.select(con, "syn", R.DEFAULT_RULE)
        assert set(latest.ids()) != before


def test_save_selection_from_members(syn):
    with connect(syn["db"]) as con:
        ev = engine.select(con, "syn", "top:irm:5")
        res, mem = ev.result, pa.table({"pair_id": ev.ids()})
        sel = save_selection(con, "top5", "syn", "top:irm:5", res, mem)
        assert sel["n_kept"] == 5 and _ids(con, "top5") == set(mem.column("pair_id").to_pylist())


def test_overlap_coefficient(syn):
    with connect(syn["db"]) as con:
        create_selection(con, "a", "syn", "irm:0-60")
        create_selection(con, "b", "syn", "irm:40-100")
        a, b = _ids(con, "a"), _ids(con, "b")
        o = overlap(con, "a", "b")
    assert o["n_both"] == len(a & b) and o["overlap"] == pytest.approx(len(a & b) / min(len(a), len(b)))
    assert o["jaccard"] == pytest.approx(len(a & b) / len(a | b))


def test_diagnostics_match_numpy(syn):
    with connect(syn["db"]) as con:
        create_selection(con, "ld", "syn")
        create_selection(con, "rnd", "syn", "random:0.7:seed=1")
        d = diagnose(con, "ld")
        kept = _ids(con, "ld")
        rnd = _ids(con, "rnd")
    train = syn["split"] == "train"
    ids = syn["ids"][train]
    is_kept = np.array([i in kept for i in ids])
    noise = syn["noise"][train]
    assert d["n_kept"] == is_kept.sum() and d["fraction"] == pytest.approx(is_kept.mean())
    nz = d["noise"]
    assert nz["n_noisy"] == noise.sum()
    assert nz["noisy_dropped_share"] == pytest.approx((~is_kept & noise).sum() / noise.sum())
    assert nz["clean_dropped_share"] == pytest.approx((~is_kept & ~noise).sum() / (~noise).sum())
    # The synthetic noisy pairs have low scores: the rule drops them more often than clean ones.
    assert nz["noisy_dropped_share"] > nz["clean_dropped_share"]
    # TIF = middle 10-90 band of IF over the split.
    f = syn["scores"]["if"][train]
    lo, hi = np.percentile(f, [10, 90])
    tif = (f >= lo) & (f <= hi)
    both = (tif & is_kept).sum()
    assert d["tif"]["n_both"] == both
    assert d["tif"]["overlap"] == pytest.approx(both / min(tif.sum(), is_kept.sum()))
    o = d["overlaps"].set_index("other").loc["rnd"]
    assert o["n_both"] == len(kept & rnd)
    s = d["scores"].set_index(["metric", "group"])
    irm = syn["scores"]["irm"][train]
    assert s.loc[("irm", "kept"), "q50"] == pytest.approx(np.median(irm[is_kept]))
    assert s.loc[("irm", "dropped"), "mean"] == pytest.approx(irm[~is_kept].mean())
    lens = d["lengths"].set_index(["field", "group"])
    with connect(syn["db"]) as con:
        chosen = dict(con.execute("SELECT pair_id, length(chosen) FROM pairs").fetchall())
    assert lens.loc[("chosen", "kept"), "mean"] == pytest.approx(np.mean([chosen[i] for i in ids[is_kept]]))


def test_diagnostics_with_tif_flag_and_without_if(db_path):
    from .conftest import seed_db

    rng = np.random.default_rng(3)
    v = rng.normal(size=60)
    seed_db(db_path, n=60, scores={"irm": v, "lossdiff": v, "tif": (np.abs(v) < 1).astype(float)})
    with connect(db_path) as con:
        create_selection(con, "t", "syn", "tif")
        d = diagnose(con, "t")
        assert d["tif"]["rule"] == "tif:v1-1" and d["tif"]["overlap"] == 1.0
    seed_db(db_path.with_name("n.duckdb"), n=30, scores={"irm": v[:30], "lossdiff": v[:30]})
    with connect(db_path.with_name("n.duckdb")) as con:
        create_selection(con, "ld", "syn")
        assert diagnose(con, "ld")["tif"] is None
