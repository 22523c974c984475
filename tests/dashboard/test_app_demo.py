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


# ---- #20 bug 7: next/previous follow the list the person came from


def _scored_in_row_order(db) -> list[str]:
    from prefsift.storage import connect

    with connect(db, read_only=True) as con:
        return [
            r[0]
            for r in con.execute(
                "SELECT pair_id FROM pairs p WHERE dataset = 'demo' AND EXISTS "
                "(SELECT 1 FROM scores s WHERE s.pair_id = p.pair_id) ORDER BY row_idx, pair_id"
            ).fetchall()
        ]


def _where(at) -> str:
    return " ".join(m.value for m in at.markdown if "Pair **" in m.value or "no score" in m.value)


def test_inspector_opened_directly_walks_the_scored_pairs(demo_app, demo_db):
    """Row order runs through eval and val pairs (never scored); the inspector skips them."""
    scored = _scored_in_row_order(demo_db)
    at = _page(demo_app().run(), "inspector")
    seen = [at.text_input(key="inspect_pair").value]
    for _ in range(6):  # the demo's first val pair is the 6th after the first scored one
        at.button(key="inspect_next").click().run()
        seen.append(at.text_input(key="inspect_pair").value)
    assert seen == scored[:7]
    assert f"Pair **7 of {len(scored)}** of the dataset's scored pairs" in _where(at)
    at.button(key="inspect_prev").click().run()
    assert at.text_input(key="inspect_pair").value == scored[5]


def test_inspector_walks_a_table_it_was_opened_from_and_goes_back_to_it(demo_app, demo_db):
    """Opened from Disagreements (as a selected row does: the table's ids and the page's settings
    go with the pair), next/previous walk that table in its order, and "Back" returns to it."""
    at = _page(demo_app().run(), "disagreements")
    at.selectbox(key="disagree_n").set_value(25).run()
    at.selectbox(key="disagree_dir").set_value("a_high").run()
    ids = list(at.dataframe[0].value["pair_id"])
    assert len(ids) == 25
    at.session_state["inspect_list"] = {
        "dataset": "demo",
        "page": "disagreements",
        "label": "Disagreements: the test's table",
        "ids": tuple(ids),
        "query": None,
        "restore": {"disagree_n": 25, "disagree_dir": "a_high"},
    }
    at.session_state["inspect_list_fresh"] = True
    at.session_state["inspect_pair"] = ids[2]
    at.session_state["inspect_linked"] = ids[2]
    _page(at, "inspector")
    assert at.text_input(key="inspect_pair").value == ids[2]
    assert "Pair **3 of 25** from Disagreements: the test's table" in _where(at)
    at.button(key="inspect_next").click().run()
    assert at.text_input(key="inspect_pair").value == ids[3]
    at.button(key="inspect_prev").click().run()
    at.button(key="inspect_prev").click().run()
    assert at.text_input(key="inspect_pair").value == ids[1]
    at.button(key="inspect_back").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Disagreements"
    assert at.selectbox(key="disagree_n").value == 25  # the table the person left, not the default
    assert at.selectbox(key="disagree_dir").value == "a_high"
    assert list(at.dataframe[0].value["pair_id"]) == ids


def test_inspector_walks_explores_sorted_filtered_list(demo_app, demo_db):
    """Opened from Explore's table (sorted by a score, filtered): next walks that order over every
    matching pair, not only the page that was shown."""
    from prefsift.storage import connect, explore
    from prefsift.storage.explore_snapshot import Filters

    with connect(demo_db, read_only=True) as con:
        runs = explore.score_runs(con, "demo")
        run = str(runs[runs["metric"] == "lossdiff"]["run_id"].iloc[-1])
        snap = explore.Snapshot(con, "demo")
        snap.load_run(con, run)
    filters = Filters(split="train")
    order = list(snap.page([run], filters, run, False, 1000)["pair_id"])
    at = demo_app()
    at.session_state["inspect_list"] = {
        "dataset": "demo",
        "page": "explore",
        "label": "Explore: the test's list",
        "ids": None,
        "query": {"runs": (run,), "filters": filters, "order_run": run, "descending": False},
        "restore": {},
    }
    at.session_state["inspect_list_fresh"] = True
    at.session_state["inspect_pair"] = order[-2]
    at.session_state["inspect_linked"] = order[-2]
    _page(at.run(), "inspector")
    assert f"Pair **{len(order) - 1} of {len(order)}** from Explore: the test's list" in _where(at)
    at.button(key="inspect_next").click().run()
    assert at.text_input(key="inspect_pair").value == order[-1]
    assert at.button(key="inspect_next").disabled  # the end of the list
    # a pair typed by hand that is not in the list: said so, and the way back stays
    with connect(demo_db, read_only=True) as con:
        outside = con.execute("SELECT pair_id FROM pairs WHERE split = 'eval' LIMIT 1").fetchone()[0]
    at.text_input(key="inspect_pair").input(outside).run()
    assert "not in the list you came from" in _where(at)
    assert at.button(key="inspect_back")
