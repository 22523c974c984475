"""`prefsift experiment` on the real demo pipeline's database (tiny model): arms trained from θ
with matched steps, evaluated on the eval pairs, intervals and paired differences, cached."""

from __future__ import annotations

import json

import pytest

from prefsift.cli import main
from prefsift.storage import connect, runs
from tests.conftest import copy_demo_db


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (tests/conftest.py::one_thread)."""


def experiment(capsys, db, theta) -> dict:
    code = main(
        ["experiment", "--db", str(db), "--selection", "lossdiff-irm", "--policy", theta, "--seeds", "0", "1",
         "--arms", "selection", "full", "random", "if-mid", "--epochs", "1", "--batch-size", "8",
         "--bootstrap", "300", "--json"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return json.loads(out)


def test_experiment_on_the_demo(demo_db, tmp_path, capsys, monkeypatch):
    db = copy_demo_db(demo_db, tmp_path / "xp")
    # The demo registers θ's adapter by a path relative to the folder it ran in: run from there.
    monkeypatch.chdir(db.parent)
    with connect(db, read_only=True) as con:
        theta = con.execute("SELECT name FROM models WHERE role = 'policy'").fetchone()[0]
    out = experiment(capsys, db, theta)
    assert out["sizes"]["random"] == out["sizes"]["selection"] == out["n_selected"]
    assert out["sizes"]["full"] == out["n_total"] and out["n_eval"] > 0
    # matched compute: every arm took the selection arm's optimizer steps (1 epoch of it)
    assert out["max_steps"] == -(-out["n_selected"] // 8)
    with connect(db, read_only=True) as con:
        steps = con.execute(
            "SELECT max(m.step) FROM training_metrics m JOIN training_runs r USING (run_id) "
            "WHERE r.kind = 'train' GROUP BY r.run_id"
        ).fetchall()
        # random draws differ between seeds; the ledger holds every arm's evaluation
        a, b = (
            set(con.execute("SELECT pair_id FROM selection_members WHERE selection = ?", [s]).df()["pair_id"])
            for s in ("xp-lossdiff-irm-random-s0", "xp-lossdiff-irm-random-s1")
        )
        n_evals = con.execute("SELECT count(DISTINCT model_id) FROM evaluations").fetchone()[0]
        stored = runs.get_diagnostics(con, "experiment:xp-lossdiff-irm").set_index("name")["value"]
    assert {s for (s,) in steps} == {out["max_steps"]} and len(steps) == 8  # 4 arms x 2 seeds
    assert a != b and len(a) == len(b)
    assert n_evals >= 8
    for metric in ("reward_accuracy", "loss"):
        arms = out["metrics"][metric]["arms"]
        assert set(arms) == {"selection", "full", "random", "if-mid", "theta"}
        for v in arms.values():
            assert v["lo"] <= v["mean"] <= v["hi"]
        diffs = {(d["arm"], d["vs"]): d for d in out["metrics"][metric]["diffs"]}
        for key in (("selection", "random"), ("selection", "full"), ("if-mid", "random")):
            assert diffs[key]["lo"] <= diffs[key]["hi"] and 0 < diffs[key]["p"] <= 1
        assert stored[f"{metric}/selection"] == pytest.approx(arms["selection"]["mean"])
    # a rerun trains nothing and gives the same numbers
    again = experiment(capsys, db, theta)
    assert {r["status"] for r in again["runs"]} == {"already done"}
    assert again["metrics"] == out["metrics"]
