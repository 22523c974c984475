"""AppTest on the database the real demo pipeline made: what #14/#20 promised a person at the
inspector and the Overview (defaults from the models' roles, a place that is kept, a typed note that
is not dropped silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture()
def demo_app(demo_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PREFSIFT_DB", str(demo_db))

    def make():
        return AppTest.from_file(str(APP), default_timeout=120)

    return make


def _page(at, name: str):
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_inspector_keeps_its_place_across_pages_and_asks_before_dropping_a_note(demo_app, demo_db):
    from prefsift.storage import connect

    at = _page(demo_app().run(), "inspector")
    first = at.text_input(key="inspect_pair").value
    with connect(demo_db, read_only=True) as con:
        split = con.execute("SELECT split FROM pairs WHERE pair_id = ?", [first]).fetchone()[0]
        scored = con.execute("SELECT count(*) FROM scores WHERE pair_id = ?", [first]).fetchone()[0]
    assert split == "train" and scored > 0  # opens on a scored pair, not on row 0
    at.button(key="inspect_next").click().run()
    second = at.text_input(key="inspect_pair").value
    assert second != first
    _page(at, "explore")
    _page(at, "inspector")
    assert at.text_input(key="inspect_pair").value == second  # back where the person was
    # a typed, unsaved note: "next" asks first instead of dropping it
    at.text_area(key=f"inspect_note_{second}").input("looks swapped").run()
    at.button(key="inspect_next").click().run()
    assert at.text_input(key="inspect_pair").value == second
    assert any("unsaved changes" in w.value for w in at.warning)
    at.button(key="inspect_discard_btn").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="inspect_pair").value not in (first, second)
    # fates of an eval pair: "not in this selection's split", never "dropped"
    with connect(demo_db, read_only=True) as con:
        eval_pair = con.execute("SELECT pair_id FROM pairs WHERE split = 'eval' LIMIT 1").fetchone()[0]
    at.text_input(key="inspect_pair").input(eval_pair).run()
    fates = at.dataframe[-1].value
    assert set(fates["fate"]) == {"not in this selection's split (train)"}


def test_overview_scoring_defaults_come_from_the_roles(demo_app, demo_db):
    from prefsift.storage import connect
    from prefsift.storage import runs as rstore

    at = _page(demo_app().run(), "overview")
    with connect(demo_db, read_only=True) as con:
        roles = rstore.model_roles(con, "demo")
    assert at.selectbox(key="overview_policy").value == roles["policy"]["name"]
    assert at.selectbox(key="overview_ref").value == roles["reference"]["name"]
    assert at.selectbox(key="overview_val").value == roles["validation"]["name"]
    assert any("Where you are" in m.value for m in at.markdown)
