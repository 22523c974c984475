"""Explore on the demo pipeline's database: Tune's rule and counts, text first, a box tied to its
axes (#20 bugs 3 and 8, UX). AppTest; the browser half is in test_browser_bugs.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from prefsift.storage import connect, explore
from tests.annotate import save_annotation
from tests.conftest import copy_demo_db

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
pytestmark = pytest.mark.e2e


@pytest.fixture()
def demo_copy(demo_db, tmp_path, monkeypatch):
    db = copy_demo_db(demo_db, tmp_path / "data")
    monkeypatch.setenv("PREFSIFT_DB", str(db))
    monkeypatch.chdir(tmp_path)
    return db


def figures(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def kept_metric(at) -> int:
    return int(next(m.value for m in at.metric if m.label == "kept").replace(",", ""))


def _force_against_the_rule(db) -> None:
    """Force-keep the two train pairs with the lowest and highest IRM, which the default rule
    (LossDiff & IRM 10-90) drops: Tune keeps two more than the bands alone."""
    with connect(db) as con:
        runs = explore.score_runs(con, "demo")
        rid = {m: runs.loc[runs["metric"] == m, "run_id"].iloc[-1] for m in ("lossdiff", "irm")}
        vals = con.execute(
            "SELECT pair_id, value FROM scores s JOIN pairs p USING (pair_id) "
            "WHERE run_id = ? AND p.dataset = 'demo' AND p.split = 'train' ORDER BY value",
            [rid["irm"]],
        ).fetchall()
        for pair_id in (vals[0][0], vals[-1][0]):
            save_annotation(con, "demo", pair_id, None, "keep anyway", "keep")


def test_explore_counts_and_bands_are_tunes(demo_copy):
    _force_against_the_rule(demo_copy)
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    at.switch_page("views/tune.py").run()
    assert not at.exception, [e.value for e in at.exception]
    tune_kept = kept_metric(at)

    at.switch_page("views/explore.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="explore_colour").set_value("band region")
    at.selectbox(key="explore_split").set_value("train").run()
    figs = figures(at)
    scatter = next(f for f in figs if " vs " in f["layout"]["title"]["text"])
    legend = {
        t["name"].split(" (")[0]: int(re.search(r"\((\d+)\)", t["name"]).group(1)) for t in scatter["data"]
    }
    # Every train pair is in the sample (30 < 4000): the chart's kept count is Tune's, forced pairs included.
    assert legend["kept"] == tune_kept
    assert any(f"keeps **{tune_kept}** of" in c.value for c in at.caption)
    assert figs[0] is scatter  # the chart comes first, above the distributions (UX)

    # x = IF, which the rule does not use: no IF band and no region named after it.
    with connect(demo_copy, read_only=True) as con:
        if_run = con.execute("SELECT run_id FROM score_runs WHERE metric = 'if'").fetchone()[0]
    at.selectbox(key="explore_x").set_value(if_run).run()
    assert not at.exception, [e.value for e in at.exception]
    fig = figures(at)[0]
    texts = [a.get("text", "") for a in fig["layout"].get("annotations", [])]
    assert not any("if" in t.split(" · ")[0] and "dropped by" in t for t in texts), texts
    vertical = [
        s for s in fig["layout"].get("shapes", []) if s.get("type") == "line" and s.get("x0") == s.get("x1")
    ]
    assert not vertical


def test_explore_table_puts_text_first_and_eval_says_never_scored(demo_copy):
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    at.switch_page("views/explore.py").run()
    cols = list(at.dataframe[0].value.columns)
    assert cols[:3] == ["prompt", "chosen", "rejected"], cols  # (rows are opened by selecting them)
    at.selectbox(key="explore_split").set_value("eval").run()
    assert not at.exception
    assert any("never scored" in i.value for i in at.info)
