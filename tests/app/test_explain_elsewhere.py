"""The demo's database served from another folder: models resolve, explain-pair links to the scoring run.

Issue #20, bugs 1 and 6, on a database made by the real demo pipeline (relative --db) and used
from a folder other than the one the pipeline ran in.
"""

from __future__ import annotations

import json

import pytest

from prefsift import cli
from prefsift.storage import connect
from tests.conftest import copy_demo_db

pytestmark = pytest.mark.e2e


@pytest.fixture()
def elsewhere(demo_db, tmp_path, monkeypatch):
    """A copy of the demo database in tmp/served/, used from tmp/cwd/ (neither is the pipeline's folder)."""
    db = copy_demo_db(demo_db, tmp_path / "served")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return db


def _one_pair(db) -> str:
    with connect(db, read_only=True) as con:
        return con.execute(
            "SELECT pair_id FROM pairs WHERE dataset = 'demo' AND split = 'train' ORDER BY row_idx LIMIT 1"
        ).fetchone()[0]


def test_registered_adapters_resolve_from_any_folder(elsewhere):
    from prefsift.models import resolve_model

    with connect(elsewhere, read_only=True) as con:
        name, adapter = con.execute(
            "SELECT name, adapter_path FROM models WHERE role = 'policy' AND adapter_path IS NOT NULL"
        ).fetchone()
    # Recorded relative to the database's folder, not to the folder the demo ran in.
    assert not adapter.startswith("/") and (elsewhere.parent / adapter).is_dir()
    spec = resolve_model(elsewhere, name)
    assert spec.adapter and (elsewhere.parent / adapter).resolve() == __import__("pathlib").Path(spec.adapter)


def test_old_rows_relative_to_another_folder_are_rebased(elsewhere):
    """Rows written before the fix hold `<stem>.prefsift/...` relative to wherever the command ran."""
    from prefsift.storage.paths import resolve_stored_path, work_dir

    old = (
        "some/other/place/prefsift-demo.prefsift/models/"
        + next(iter((work_dir(elsewhere) / "models").iterdir())).name
    )
    got = resolve_stored_path(elsewhere, old)
    assert got == str((work_dir(elsewhere) / "models" / old.rsplit("/", 1)[1]).resolve())
    assert resolve_stored_path(elsewhere, "HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_explain_pair_from_another_folder_links_to_the_scoring_run(elsewhere, capsys):
    pair = _one_pair(elsewhere)
    with connect(elsewhere, read_only=True) as con:
        pol, ref = (
            con.execute(
                f"SELECT name FROM models WHERE role = '{r}' ORDER BY created_at DESC LIMIT 1"
            ).fetchone()[0]
            for r in ("policy", "reference")
        )
    argv = ["explain-pair", "--db", str(elsewhere), "--json", "--dataset", "demo", "--pair", pair]
    rc = cli.main(argv + ["--policy", pol, "--ref", ref])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out[out.out.index("{") :])
    with connect(elsewhere, read_only=True) as con:
        runs = dict(con.execute(
            "SELECT m.role, l.run_id FROM logp_runs l JOIN models m USING (model_id) "
            "WHERE l.dataset = 'demo' AND json_extract_string(l.config, '$.split') = 'train'"
        ).fetchall())  # fmt: skip
        from prefsift.storage import explore

        toks = explore.token_logps(con, pair)
    # The token rows are keyed by the log-prob runs the scores were computed from (same max_length),
    # so the inspector can name the policy.
    assert res["run_id"] == runs["policy"] and res["ref_run"] == runs["reference"]
    assert set(toks["policy"]) == {pol}


def test_stored_path_is_relative_to_the_database_or_absolute(tmp_path, monkeypatch):
    from prefsift.storage.paths import resolve_stored_path, stored_path

    db = tmp_path / "work" / "hh.duckdb"
    inside = tmp_path / "work" / "hh.prefsift" / "models" / "theta"
    outside = tmp_path / "elsewhere" / "adapter"
    inside.mkdir(parents=True)
    outside.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the command runs here, with --db work/hh.duckdb
    assert stored_path("work/hh.duckdb", "work/hh.prefsift/models/theta") == "hh.prefsift/models/theta"
    assert stored_path(db, "elsewhere/adapter") == str(outside)
    assert stored_path(db, "org/hub-model") == "org/hub-model"
    monkeypatch.chdir(outside)  # read back from anywhere
    assert resolve_stored_path(db, "hh.prefsift/models/theta") == str(inside)
    assert resolve_stored_path(db, "work/hh.prefsift/models/theta") == str(inside)  # an old, cwd-relative row
