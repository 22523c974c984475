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
