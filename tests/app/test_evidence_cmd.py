"""`prefsift diagnose` / `calibrate` on the real demo pipeline's database: every overlap beside its
chance level, correlations and AUROC with intervals (issue 15, item 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prefsift.cli import main
from prefsift.config import CalibrationConfig
from prefsift.select import calibrate_arrays


def cli(capsys, *argv) -> dict:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_diagnose_json_on_the_demo_carries_intervals_chance_and_auroc(demo_db, capsys):
    d = cli(capsys, "diagnose", "--db", str(demo_db), "--selection", "lossdiff-irm", "--bootstrap", "300")
    # the stored TIF comparison: overlap beside a same-size random selection's
    t = d["tif"]
    assert 0 < t["chance"] < 1 and t["null_lo"] <= t["chance"] <= t["null_hi"]
    assert t["lift"] == pytest.approx(t["overlap"] / t["chance"]) and 0 <= t["p_value"] <= 1
    assert 0 <= d["noise"]["p_value"] <= 1 and 0 < d["noise"]["chance_dropped_share"] < 1
    ev = d["evidence"]
    assert ev["n_boot"] == 300 and ev["policy_eval"]["n_pairs"] > 0  # θ's eval margin travels with it
    # overlaps at three band widths, each rule against its chance level
    bands = {(r["band"], r["rule"]): r for r in ev["bands"]}
    for band in ("10-90", "20-80", "33-67"):
        for rule in ("irm", "lossdiff", "lossdiff-irm"):
            r = bands[(band, rule)]
            assert r["n"] == ev["n_with_if"] and r["null_lo"] <= r["chance"] <= r["null_hi"]
            assert {"lift", "kappa", "p_value"} <= set(r)
    assert ("10-90", "selection") in bands
    # correlations with IF: intervals, partial on token counts, chance level 2/sqrt(n)
    for r in ev["correlations"]:
        if r["subset"] == "all":
            assert r["pearson_lo"] <= r["pearson"] <= r["pearson_hi"]
            assert r["spearman_lo"] <= r["spearman_hi"] and r["partial_pearson_lo"] <= r["partial_pearson_hi"]
            assert r["chance_abs_r"] == pytest.approx(2 / np.sqrt(r["n"]))
    assert {r["score"] for r in ev["correlations"]} == {"irm", "lossdiff"}
    assert {r["score"] for r in ev["length"]} == {"irm", "lossdiff", "if"}
    # the demo flags swapped pairs: AUROC of each score with an interval, 0.5 = chance
    auc = {r["score"]: r for r in ev["noise_auroc"]}
    assert set(auc) == {"irm", "lossdiff", "if"}
    for r in auc.values():
        assert r["n_positive"] > 0 and r["auroc_lo"] <= r["auroc"] <= r["auroc_hi"] and r["chance"] == 0.5
    # the same seed gives the same intervals; the text shows them
    again = cli(capsys, "diagnose", "--db", str(demo_db), "--selection", "lossdiff-irm", "--bootstrap", "300")
    assert again["evidence"] == ev
    main(["diagnose", "--db", str(demo_db), "--selection", "lossdiff-irm", "--bootstrap", "200"])
    text = capsys.readouterr().out
    assert "chance" in text and "AUROC" in text and "lift" in text


def test_calibrate_reports_the_chance_of_a_fixed_rule_and_of_the_search(demo_db, capsys):
    out = cli(
        capsys, "calibrate", "--db", str(demo_db), "--dataset", "demo", "--step", "10",
        "--bootstrap", "200", "--permutations", "100",
    )  # fmt: skip
    fx, sn = out["fixed_rule_chance"], out["search_null"]
    assert fx["null_lo"] <= fx["chance"] <= fx["null_hi"] and fx["lift"] > 0
    # the best of a grid beats one fixed rule's chance: its own null sits higher
    assert sn["best_overlap_mean"] >= fx["chance"] - 1e-9 and 0 < sn["p_value"] <= 1
    assert {"chance", "lift"} <= set(out["top"][0]) and out["evidence"]["bands"]


def test_search_null_tells_signal_from_a_lucky_grid():
    rng = np.random.default_rng(0)
    n = 300
    ld, irm = rng.normal(size=n), rng.normal(size=n)
    cfg = CalibrationConfig(step=10, n_perm=100)
    unrelated = calibrate_arrays(ld, irm, rng.normal(size=n), cfg)
    related = calibrate_arrays(ld, irm, ld + 0.3 * rng.normal(size=n), cfg)
    assert unrelated["search_null"]["p_value"] > 0.05
    assert related["search_null"]["p_value"] < 0.02
    assert related["overlap_tif"] > related["search_null"]["best_overlap_hi"]


def test_trained_pairs_follow_the_lineage(demo_db):
    """θ (warm-up) trained on the train split; θ_val (fit-val from θ) on val as well: the split of
    the correlations into pairs θ trained on and not rests on this."""
    from prefsift.storage import connect
    from prefsift.storage.diagnose import trained_pairs

    with connect(demo_db, read_only=True) as con:
        split = dict(con.execute("SELECT pair_id, split FROM pairs WHERE dataset = 'demo'").fetchall())
        runs = dict(
            con.execute("SELECT kind, output_model FROM training_runs WHERE status = 'done'").fetchall()
        )
        theta = trained_pairs(con, "demo", runs["warmup"])
        theta_val = trained_pairs(con, "demo", runs["fit-val"])
        ref = trained_pairs(con, "demo", "no-such-model")
    assert theta == sorted(p for p, s in split.items() if s == "train")
    assert theta_val == sorted(p for p, s in split.items() if s in ("train", "val"))
    assert ref is None
