"""storage/training.py: run lifecycle, metric upserts, evaluations, ledger, evaluations."""

from __future__ import annotations

import math

import pytest

from prefsift.storage import connect
from prefsift.storage import runs as rstore
from prefsift.storage import training as tstore


def test_run_lifecycle_and_metrics(split_db):
    with connect(split_db) as con:
        tstore.start_run(con, "r1", "train", "tiny", None, "base", "/out", {"beta": 0.1})
        assert tstore.get_run(con, "r1")["status"] == "running"
        assert (
            tstore.add_metrics(
                con, "r1", 1, {"loss": 0.7, "rewards/margins": 0.1, "flag": True, "x": math.nan}
            )
            == 2
        )
        tstore.add_metrics(con, "r1", 1, {"loss": 0.6})  # a resumed run rewrites its step
        tstore.add_metrics(con, "r1", 2, {"loss": 0.5})
        wide = tstore.get_metrics(con, "r1")
        assert wide["loss"].tolist() == [0.6, 0.5] and wide["rewards/margins"].iloc[0] == 0.1
        tstore.finish_run(con, "r1", "done", output_model="m1")
        run = tstore.get_run(con, "r1")
        assert run["status"] == "done" and run["output_model"] == "m1" and run["config"] == {"beta": 0.1}
        with pytest.raises(ValueError):
            tstore.finish_run(con, "r1", "weird")
        assert tstore.count_trained(con, "tiny") == 1


def test_ledger_joins_runs_selections_evaluations(split_db):
    from prefsift.storage import selections as sstore

    with connect(split_db) as con:
        sstore.create_selection(con, "half", "tiny", rule="random:0.5:seed=0")
        rstore.register_model(con, "ref1", "/ref", name="ref", role="reference")
        rstore.register_model(con, "m1", "/ref", name="trained-half", adapter_path="/a", role="trained")
        tstore.start_run(con, "r1", "train", "tiny", "half", "ref1", "/a", {})
        tstore.finish_run(con, "r1", "done", output_model="m1")
        tstore.save_evaluation(con, "m1", "tiny", "eval", 4, 0.6, 0.75, 0.2, {})
        tstore.save_evaluation(con, "ref1", "tiny", "eval", 4, math.log(2), 0.0, 0.0, {})
        tstore.save_evaluation(con, "m1", "tiny", "eval", 4, 0.5, 1.0, 0.3, {})  # re-evaluation replaces
        led = tstore.ledger(con, "tiny")
        evaluations = tstore.get_evaluations(con, "tiny")
    assert list(led["model"]) == ["trained-half", "ref"]
    row = led.iloc[0]
    assert (row["selection"], row["n_kept"], row["loss"], row["reward_accuracy"]) == ("half", 4, 0.5, 1.0)
    assert led.iloc[1]["selection"] is None or led.iloc[1]["selection"] != led.iloc[1]["selection"]
    assert len(evaluations) == 2
