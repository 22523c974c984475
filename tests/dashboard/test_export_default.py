"""Export & train opens on the selection a person would train, not on a baseline: after `prefsift
demo` that is LossDiff-IRM (the demo also saves TIF and a same-size random draw to compare with);
after a save on Tune, the one saved."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from prefsift.storage import connect
from prefsift.storage import selections as S
from prefsift.storage.rules import parse_rule
from tests.conftest import copy_demo_db

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
pytestmark = pytest.mark.e2e


def test_export_opens_on_the_demos_selection_then_on_the_one_saved(demo_db, tmp_path, monkeypatch):
    db = copy_demo_db(demo_db, tmp_path / "data")
    monkeypatch.setenv("PREFSIFT_DB", str(db))
    with connect(db, read_only=True) as con:
        order = list(S.list_selections(con, "demo")["name"])
    assert order[-1] == "random-baseline" and "lossdiff-irm" in order  # the newest is the baseline
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    at.switch_page("views/export_train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="export_selection").value == "lossdiff-irm"

    with connect(db) as con:  # a newer selection of the person's own
        S.create_selection(con, "mine", "demo", parse_rule("irm:20-80"), None, "train")
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    at.switch_page("views/export_train.py").run()
    assert at.selectbox(key="export_selection").value == "mine"
    at.switch_page("views/tune.py").run()
    at.session_state["tune_saved"] = "lossdiff-irm"  # what Tune records when it saves
    at.switch_page("views/export_train.py").run()
    assert at.selectbox(key="export_selection").value == "lossdiff-irm"


def test_the_ledger_gives_reward_accuracy_its_interval_on_the_demo(demo_db, monkeypatch):
    """θ's held-out reward accuracy after `prefsift demo` is a share of a few dozen pairs: the
    ledger carries its 95% Wilson interval and the page says over how many pairs."""
    from prefsift.storage import training as T
    from prefsift.storage.chance import wilson

    with connect(demo_db, read_only=True) as con:
        led = T.ledger(con, "demo")
    row = led[led["split"] == "eval"].iloc[0]
    n, acc = int(row["n_pairs"]), row["reward_accuracy"]
    assert (row["accuracy_lo"], row["accuracy_hi"]) == pytest.approx(wilson(acc * n, n))
    assert row["accuracy_lo"] < acc < row["accuracy_hi"] and row["accuracy_hi"] - row["accuracy_lo"] > 0.1
    monkeypatch.setenv("PREFSIFT_DB", str(demo_db))
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    at.switch_page("views/export_train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"95% interval (Wilson) over {n:,}" in c.value for c in at.caption)
