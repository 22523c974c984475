"""Team curation in the app (AppTest, st.user and secrets simulated): sign-in gate, roles enforced
where the work is done, decisions by two people on one pair, the agreement view, the review queue.
(The real sign-in through an OpenID Connect provider: test_team_browser.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefsift.storage import annotations as A
from prefsift.storage import connect

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "test-secret",
        "client_id": "prefsift",
        "client_secret": "s",
        "server_metadata_url": "http://localhost:1/.well-known/openid-configuration",
    },
    "prefsift": {"roles": {"curators": ["carol@example.com"]}},
}


@pytest.fixture()
def team_app(seeded, monkeypatch):
    """An AppTest of the app served for a team, as `who` (None: nobody signed in)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PREFSIFT_DB", str(seeded["db"]))
    monkeypatch.delenv("PREFSIFT_CURATORS", raising=False)

    def make(who: str | None, page: str | None = None, **query):
        at = AppTest.from_file(str(APP), default_timeout=90)
        at.secrets = {k: dict(v) for k, v in AUTH.items()}
        at.user = (
            {"is_logged_in": False} if who is None else {"is_logged_in": True, "email": who, "name": who}
        )
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
        if page:
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return make


def _all_text(at) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "text", "info", "title", "error")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_a_visit_that_has_not_signed_in_sees_no_data(team_app, seeded):
    at = team_app(None, pair=seeded["xss_pair"], dataset=seeded["dataset"])
    assert [b.label for b in at.button] == ["Sign in"]
    text = _all_text(at)
    assert "sign in" in text.lower()
    assert "xss-prompt" not in text and "pairs ·" not in text and "Database:" not in text
    assert not at.selectbox and not at.dataframe and not at.text_input  # no dataset picker, no pair


def test_roles_are_enforced_where_the_work_is_done(team_app, seeded):
    """bob (annotator) is not offered Save selection on Tune and is refused Export by dashboard.data
    (the data layer refuses a save too: next test), nothing written; carol (curator) does the same:
    saved, and the audit log says who."""
    bob = team_app("bob@example.com", "tune")
    assert any("bob@example.com** (annotator)" in c.value for c in bob.sidebar.caption)
    assert not [b for b in bob.button if b.key == "tune_save"]
    assert any("Saving selections is for curators" in i.value for i in bob.info), [i.value for i in bob.info]
    carol = team_app("carol@example.com", "tune")
    carol.text_input(key="tune_name").input("carol-sel").run()
    carol.button(key="tune_save").click().run()
    assert any("Saved selection" in s.value for s in carol.success), [e.value for e in carol.error]
    bob = team_app("bob@example.com", "export_train")
    bob.button(key="export_only").click().run()
    assert any("Export failed: only curators" in e.value for e in bob.error), [e.value for e in bob.error]
    with connect(seeded["db"], read_only=True) as con:
        names = {r[0] for r in con.execute("SELECT name FROM selections").fetchall()}
        n_exports = con.execute("SELECT count(*) FROM exports").fetchone()[0]
    assert "carol-sel" in names and "bob-sel" not in names and n_exports == 0
    carol = team_app("carol@example.com", "export_train")
    carol.button(key="export_only").click().run()
    assert any("Exported" in s.value for s in carol.success), [e.value for e in carol.error]
    with connect(seeded["db"], read_only=True) as con:
        audit = con.execute("SELECT who, role, action FROM audit_log").fetchall()
        manifest = json.loads(con.execute("SELECT manifest FROM exports").fetchone()[0])
    assert (manifest["exported_by"], manifest["exported_by_role"]) == ("carol@example.com", "curator")
    assert ("carol@example.com", "curator", "export_selection") in audit
    assert ("carol@example.com", "curator", "create_selection") in audit
    assert all(who != "bob@example.com" for who, _, _ in audit)


def test_data_layer_refuses_an_annotator_without_any_page(monkeypatch, seeded):
    """The check is in the functions, not the buttons: called directly as an annotator."""
    from prefsift.dashboard import data, identity
    from prefsift.storage import selections

    monkeypatch.setenv("PREFSIFT_DB", str(seeded["db"]))
    monkeypatch.setattr(identity, "current", lambda: identity.Identity("dan", "annotator", "dan", True))
    with pytest.raises(identity.NotAllowed, match="only curators can create selection"):
        data.write(selections.create_selection, "dan-sel", seeded["dataset"], "irm:10-90")
    with pytest.raises(identity.NotAllowed, match="only curators can start train job"):
        data.start_job(["train", "--selection", "x"])
    monkeypatch.setattr(identity, "current", lambda: None)
    with pytest.raises(identity.NotAllowed, match="sign in"):
        data.decide(seeded["dataset"], seeded["pair_ids"][0], expected=None, force="drop")


def test_two_people_decide_one_pair_and_the_team_page_shows_agreement(team_app, seeded):
    ds, pids = seeded["dataset"], seeded["pair_ids"][20:23]
    for who, forces in (
        ("alice@example.com", ["drop", "drop", None]),
        ("bob@example.com", ["keep", "drop", None]),
    ):
        for pid, force in zip(pids, forces):
            at = team_app(who, None, pair=pid, dataset=ds)
            assert at.title[0].value == "Pair inspector"
            at.radio(key=f"inspect_force_{pid}").set_value(
                {"drop": "force drop", "keep": "force keep"}.get(force, "rule decides")
            )
            at.button(key=f"inspect_save_{pid}").click().run()
            assert not at.exception and any(s.value.startswith("Saved") for s in at.success), [
                e.value for e in at.error
            ]
    at = team_app("carol@example.com", None, pair=pids[0], dataset=ds)
    table = next(t.value for t in at.table if "decision" in t.value.columns)
    assert set(table.index) == {"alice@example.com", "bob@example.com"}
    assert set(table["decision"]) == {"force drop", "force keep"}
    assert any("in conflict" in m.value for m in at.markdown)
    with connect(seeded["db"], read_only=True) as con:
        hist = A.history(con, ds, pids[0])
        assert sorted(hist["annotator"]) == ["alice@example.com", "bob@example.com"]
        assert A.effective_one(con, ds, pids[1])["status"] == "agreed"
    team = team_app("bob@example.com", "team")
    agreement = next(t.value for t in team.table if "Cohen's κ [95% CI]" in t.value.columns)
    row = agreement.loc["alice@example.com · bob@example.com"]
    assert int(row["pairs both decided"]) == 3 and int(row["agree"]) == 2
    conflict_lines = [m.value for m in team.markdown if "inspector?pair=" in m.value]
    assert len(conflict_lines) == 1 and pids[0] in conflict_lines[0] and pids[1] not in conflict_lines[0]


def test_next_pair_to_review_walks_undecided_pairs(team_app, seeded):
    ds = seeded["dataset"]
    at = team_app("erin@example.com", "inspector")
    at.selectbox(key="review_signal").set_value("noisy").run()
    with connect(seeded["db"], read_only=True) as con:
        queue, _ = A.review_queue(con, ds, "erin@example.com", "noisy", limit=2)
    first, second = list(queue["pair_id"])
    here = at.text_input(key="inspect_pair").value
    at.button(key="review_next").click().run()
    assert at.text_input(key="inspect_pair").value == (first if here != first else second)
    now = at.text_input(key="inspect_pair").value
    at.button(key=f"inspect_save_{now}").click().run()  # "looked at it, the rule decides"
    at.button(key="review_next").click().run()
    moved = at.text_input(key="inspect_pair").value
    assert moved != now
    with connect(seeded["db"], read_only=True) as con:
        noise = con.execute("SELECT noise FROM pairs WHERE pair_id = ?", [moved]).fetchone()[0]
        assert A.get_decision(con, ds, now, "erin@example.com") is not None
    assert noise  # still walking the noisy pairs first


def test_the_local_name_comes_from_user_then_env_then_the_os(monkeypatch, tmp_path):
    """Without [auth] (loopback, one person): `prefsift serve --user` (passed to the app as
    `-- --user NAME`), else $PREFSIFT_USER, else the OS user; that person is a curator."""
    import getpass
    import sys

    from prefsift.commands import serve
    from prefsift.dashboard import identity

    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    monkeypatch.setattr(sys, "argv", ["app.py", "--db", "x.duckdb", "--user", "dora"])
    monkeypatch.setenv("PREFSIFT_USER", "env-person")
    assert identity.current() == identity.Identity("dora", "curator", "dora", False)
    monkeypatch.setattr(sys, "argv", ["app.py", "--db", "x.duckdb"])
    assert identity.current().name == "env-person"
    monkeypatch.delenv("PREFSIFT_USER")
    assert identity.current().name == getpass.getuser()
    import argparse

    args = argparse.Namespace(db=str(tmp_path / "x.duckdb"), host="127.0.0.1", port=8501, user="dora")
    assert serve.command(args)[-2:] == ["--user", "dora"]
