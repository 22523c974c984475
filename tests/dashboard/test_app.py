"""Every page of the app under streamlit.testing (AppTest) on a seeded database."""

from __future__ import annotations

import re
from pathlib import Path

from prefsift.storage import connect

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"

PAGES = ["overview", "explore", "disagreements", "inspector", "tune", "export_train", "compare"]


def open_page(app, name: str):
    at = app().run()
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_every_page_renders(app):
    at = app().run()
    titles = {
        "Overview",
        "Explore",
        "Disagreements",
        "Pair inspector",
        "Tune & select",
        "Export & train",
        "Compare models",
    }
    seen = set()
    for name in PAGES:  # one session through every page, as a user clicks through the menu
        at.switch_page(f"views/{name}.py").run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert not at.error, (name, [e.value for e in at.error])
        seen.add(at.title[0].value)
    assert seen == titles


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_tune_slider_changes_kept_count_and_save_lands_in_storage(app, seeded):
    at = open_page(app, "tune")
    before = int(metric(at, "kept").replace(",", ""))
    at.slider(key="tune_band_lossdiff").set_value((30.0, 70.0)).run()
    after = int(metric(at, "kept").replace(",", ""))
    assert after < before
    at.text_input(key="tune_name").input("apptest-sel").run()
    at.button(key="tune_save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Saved selection" in s.value for s in at.success)
    with connect(seeded["db"], read_only=True) as con:
        row = con.execute("SELECT n_kept, rule FROM selections WHERE name = 'apptest-sel'").fetchone()
        n_members = con.execute(
            "SELECT count(*) FROM selection_members WHERE selection = 'apptest-sel'"
        ).fetchone()[0]
    assert row is not None and row[0] == after == n_members
    assert '"lo": 30.0' in row[1] and '"hi": 70.0' in row[1]
    # The bands travel to the Explore page (drawn there).
    at.switch_page("views/explore.py").run()
    assert any("x 30–70 pct" in c.value for c in at.caption)
    # Saving again under the same name without "replace" is refused with a message, not a crash.
    at.switch_page("views/tune.py").run()
    at.text_input(key="tune_name").input("apptest-sel").run()
    at.button(key="tune_save").click().run()
    assert not at.exception and any("exists" in e.value for e in at.error)
    # ... in the page's words: the checkbox beside the button, not the CLI's flag (#20 bug 9).
    assert any("replace if it exists" in e.value for e in at.error)
    assert not any("--force" in e.value for e in at.error)


def test_explore_text_search_narrows_the_table(app, seeded):
    at = open_page(app, "explore")
    total = int(
        re.search(r"\*\*([\d,]+)\*\*", next(c.value for c in at.caption if "pairs match" in c.value))[
            1
        ].replace(",", "")
    )
    assert total == 400
    at.text_input(key="explore_text").input("xss-prompt").run()
    assert not at.exception
    cap = next(c.value for c in at.caption if "pairs match" in c.value)
    assert cap.startswith("**1** pairs match")
    df = at.dataframe[-1].value
    assert list(df["pair_id"]) == [seeded["xss_pair"]]
    at.radio(key="explore_view").set_value("density").run()
    assert not at.exception


def test_inspector_deep_link_renders_payload_as_text_and_saves_annotation(app, seeded):
    at = app()
    at.query_params["pair"] = seeded["xss_pair"]
    at.query_params["dataset"] = seeded["dataset"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Pair inspector"
    assert at.text_input(key="inspect_pair").value == seeded["xss_pair"]
    texts = [t.value for t in at.text]
    assert any('<script>alert("xss-prompt")</script>' in t for t in texts)  # shown verbatim, as text
    html_blocks = [m.value for m in at.markdown if "ps-box" in m.value]
    assert html_blocks and all("<script" not in b and "<img" not in b for b in html_blocks)
    assert any("&lt;script&gt;" in b for b in html_blocks)
    # annotate: force drop
    pid = seeded["xss_pair"]
    at.radio(key=f"inspect_force_{pid}").set_value("force drop")
    at.text_area(key=f"inspect_note_{pid}").input("payload pair")
    at.button[-1].click().run()  # the form's submit button
    assert not at.exception and any("Saved" in s.value for s in at.success)
    with connect(seeded["db"], read_only=True) as con:
        row = con.execute("SELECT force, note FROM annotations WHERE pair_id = ?", [pid]).fetchone()
    assert row == ("drop", "payload pair")


def test_inspector_next_button_moves_to_the_next_pair(app, seeded):
    at = open_page(app, "inspector")
    first = at.text_input(key="inspect_pair").value
    assert first == seeded["pair_ids"][0]
    at.button(key="inspect_next").click().run()
    assert at.text_input(key="inspect_pair").value == seeded["pair_ids"][1]


def test_export_writes_inside_the_exports_folder(app, seeded):
    with connect(seeded["db"]) as con:
        from prefsift.storage.selections import create_selection

        create_selection(
            con, "exp-sel", seeded["dataset"], "irm:10-90", runs={"irm": seeded["runs"]["irm_a"]}, force=True
        )
    at = open_page(app, "export_train")
    at.selectbox(key="export_selection").set_value("exp-sel").run()
    at.button(key="export_only").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    root = seeded["db"].with_name(seeded["db"].stem + ".prefsift") / "exports"
    files = list(root.glob("exp-sel-*.parquet"))
    assert len(files) == 1 and (root / (files[0].name + ".manifest.json")).exists()
    import pyarrow.parquet as pq

    with connect(seeded["db"], read_only=True) as con:
        n = con.execute("SELECT n_kept FROM selections WHERE name = 'exp-sel'").fetchone()[0]
    assert pq.read_table(files[0]).num_rows == n
    # the ledger lists every evaluated model of the dataset, the trained one with its selection
    ledger = at.dataframe[-1].value
    assert set(ledger["model"]) == {"ref", "theta_a", "trained-ldirm"}
    assert ledger.set_index("model").loc["trained-ldirm", "selection"] == "ldirm-10-90"


def test_compare_page_shows_both_models(app):
    at = open_page(app, "compare")
    corr = at.dataframe[0].value
    assert set(corr["score"]) == {"irm", "lossdiff"}
    assert corr["Spearman ρ"].between(-1, 1).all()
    assert any("kept only under" in m.label for m in at.metric)


def test_disagreements_page_lists_pairs(app):
    at = open_page(app, "disagreements")
    df = at.dataframe[0].value
    assert len(df) == 50 and (df["rank_diff"].abs().diff().dropna() <= 1e-12).all()


def test_empty_database_explains_next_step(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PREFSIFT_DB", str(tmp_path / "none.duckdb"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert any("prefsift ingest" in i.value for i in at.info)


def test_dataset_without_scores_explains_scoring(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from synth import make_db

    db = tmp_path / "noscores.duckdb"
    make_db(db, n=20)
    with connect(db) as con:
        con.execute("DELETE FROM scores")
        con.execute("DELETE FROM score_runs")
    monkeypatch.setenv("PREFSIFT_DB", str(db))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    for page in ("explore", "tune", "disagreements", "compare"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception
        assert any("prefsift score" in i.value for i in at.info), page


def test_busy_database_shows_a_notice_not_an_error(app, monkeypatch):
    import contextlib

    from prefsift import storage
    from prefsift.storage.errors import DatabaseLocked

    at = app().run()
    at.switch_page("views/overview.py")

    @contextlib.contextmanager
    def locked(*a, **k):
        raise DatabaseLocked("busy")
        yield

    import streamlit as st

    st.cache_data.clear()
    monkeypatch.setattr(storage, "connect", locked)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("busy" in i.value for i in at.info)


def test_inspector_shows_token_logps_escaped(app, seeded):
    pid = seeded["pair_ids"][7]
    with connect(seeded["db"]) as con:
        con.execute(
            "INSERT INTO token_logps VALUES ('tok-run', 'ref-run', ?, 'chosen', ['<img', ' ok'], [-1.0, -0.2], [-0.5, -0.9]), "
            "('tok-run', 'ref-run', ?, 'rejected', ['no'], [-3.0], [-1.0])",
            [pid, pid],
        )
    try:
        at = app()
        at.query_params["pair"] = pid
        at.query_params["dataset"] = seeded["dataset"]
        at.run()
        assert not at.exception
        toks = [
            m.value for m in at.markdown if m.value.startswith('<div class="ps-box"><span class="ps-tok"')
        ]
        assert len(toks) == 2
        assert "&lt;img" in toks[0] and "<img" not in toks[0]
        assert 'title="-0.500"' in toks[0] and 'title="+0.700"' in toks[0]
    finally:
        with connect(seeded["db"]) as con:
            con.execute("DELETE FROM token_logps WHERE run_id = 'tok-run'")


def test_write_under_a_held_lock_returns_busy_not_an_error(seeded, monkeypatch):
    import contextlib

    from prefsift import storage
    from prefsift.dashboard import data
    from prefsift.storage.errors import DatabaseLocked

    @contextlib.contextmanager
    def locked(*a, **k):
        raise DatabaseLocked("busy")
        yield

    monkeypatch.setenv("PREFSIFT_DB", str(seeded["db"]))
    monkeypatch.setattr(storage, "connect", locked)
    assert data.write(lambda con: 1) is data.WRITE_BUSY
