"""The Evidence page (#15) on a database made by the real demo pipeline: `prefsift experiment`'s
arms with 95% intervals, the paired differences and their reading; the selection's overlap with
TIF beside its chance level, correlations and AUROC with intervals; the empty state's command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from prefsift.cli import main
from prefsift.storage import connect
from tests.conftest import copy_demo_db

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (tests/conftest.py::one_thread)."""


def theta_of(db) -> str:
    with connect(db, read_only=True) as con:
        return con.execute("SELECT name FROM models WHERE role = 'policy'").fetchone()[0]


def open_evidence(db, monkeypatch) -> AppTest:
    monkeypatch.setenv("PREFSIFT_DB", str(db))
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.switch_page("views/evidence.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Evidence"
    return at


def texts(at) -> str:
    return "\n".join(
        [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    )


def test_the_experiment_arms_and_the_tif_evidence(demo_db, tmp_path, capsys, monkeypatch):
    db = copy_demo_db(demo_db, tmp_path / "xp")
    monkeypatch.chdir(db.parent)  # θ's adapter is registered by a path relative to the demo's folder
    code = main(
        ["experiment", "--db", str(db), "--selection", "lossdiff-irm", "--policy", theta_of(db), "--seeds", "0", "1",
         "--arms", "selection", "full", "random", "--epochs", "1", "--batch-size", "8", "--bootstrap", "200",
         "--json"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    result = json.loads(out)
    at = open_evidence(db, monkeypatch)
    page = texts(at)

    # (1) the experiment: how compute was matched, the seeds, the reading of selection vs random/full
    assert "xp-lossdiff-irm" in at.selectbox(key="evidence_experiment").options
    assert f"{result['max_steps']} optimizer steps" in page and "2 seeds" in page
    assert f"{result['n_eval']} held-out" in page
    sel_vs = {d["vs"]: d for d in result["metrics"]["reward_accuracy"]["diffs"] if d["arm"] == "selection"}
    for ref, words in (("random", "a same-size random subset"), ("full", "the full split")):
        d = sel_vs[ref]
        line = next(m.value for m in at.markdown if words in m.value)
        assert f"[{d['lo']:+.3f}, {d['hi']:+.3f}]" in line
        covers = d["lo"] <= 0 <= d["hi"]
        assert line.startswith("- Cannot tell") == covers
    # each arm with its interval, in the chart (error bars) and in the table
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    arms_fig = next(
        f for f in charts.values() if "reward accuracy on the held-out" in f["layout"]["title"]["text"]
    )
    trace = arms_fig["data"][0]
    assert set(trace["x"]) == {"selection", "random (same size)", "full split", "θ (no further training)"}
    assert trace["error_y"]["array"] and trace["error_y"]["arrayminus"]
    arms = result["metrics"]["reward_accuracy"]["arms"]
    table = next(df.value for df in at.dataframe if "seeds" in df.value.columns)
    row = table.set_index("label").loc["selection"]
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx(
        (arms["selection"]["mean"], arms["selection"]["lo"], arms["selection"]["hi"])
    )
    assert any("paired differences in DPO loss" in f["layout"]["title"]["text"] for f in charts.values())

    # (2) the selection against TIF: overlap beside the same-size random chance level and null range
    metrics = {m.label: m.value for m in at.metric}
    assert {"overlap with TIF", "random, same size", "random: 95% range", "lift · κ"} <= set(metrics)
    assert "random selection of the same size reaches" in page
    # correlations and AUROC with intervals, computed by `prefsift diagnose`
    corr = next(df.value for df in at.dataframe if "pearson_lo" in df.value.columns).dropna(
        subset=["pearson"]
    )
    assert len(corr)  # subsets of fewer than 3 pairs have no correlation
    assert (corr["pearson_lo"] <= corr["pearson"]).all() and (corr["pearson"] <= corr["pearson_hi"]).all()
    assert any("auroc_lo" in df.value.columns for df in at.dataframe)


def test_without_an_experiment_the_page_gives_the_command_and_starts_the_job(demo_db, tmp_path, monkeypatch):
    db = copy_demo_db(demo_db, tmp_path / "empty")
    theta = theta_of(db)
    started = []
    from prefsift.dashboard import data

    def fake_start(argv):
        started.append(argv)
        return {"job_id": "job-xp-1", "log_path": "", "status_path": ""}

    monkeypatch.setattr(data, "start_job", fake_start)
    at = open_evidence(db, monkeypatch)
    info = "\n".join(i.value for i in at.info)
    assert "No experiment has been run" in info
    assert f"prefsift experiment --selection lossdiff-irm --policy {theta} --db {db}" in info
    at.number_input(key="evidence_run_seeds").set_value(2).run()
    at.button(key="evidence_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert started == [["experiment", "--selection", "lossdiff-irm", "--policy", theta, "--seeds", "0", "1"]]
    assert any("job-xp-1" in s.value for s in at.success)


def test_the_page_renders_on_a_database_without_experiments_or_models(app):
    """The seeded synthetic database: scores and TIF flags, no θ trained by prefsift, no experiment."""
    at = app().run()
    at.switch_page("views/evidence.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Evidence"
    assert any("prefsift" in i.value for i in at.info)  # the empty state says what to run
