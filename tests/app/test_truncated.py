"""Fully truncated pairs (the prompt fills max_length, no response token left): IRM = LossDiff =
IF = 0 by construction, which puts them mid-band, so every middle-band rule kept and exported them
while TRL drops them. They are reported and left out of scores, bands and exports."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from prefsift.cli import main
from prefsift.storage import connect, engine, runs
from prefsift.storage import rules as R
from prefsift.storage.exports import export_selection
from prefsift.storage.selections import create_selection, member_ids, save_selection
from tests.conftest import write_jsonl

LONG_PROMPT = "what is the capital of france ? " * 12  # > 48 tokens of the tiny tokenizer
LONG = {"prompt": LONG_PROMPT, "chosen": "paris .", "rejected": "a city ."}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (tests/conftest.py::one_thread)."""


@pytest.fixture()
def long_db(tiny_db, tmp_path):
    """tiny_db plus one train pair whose prompt alone exceeds 24 tokens."""
    from prefsift.ingest import ingest

    ingest(write_jsonl(tmp_path / "long.jsonl", [LONG]), name="tiny", db=tiny_db)
    with connect(tiny_db, read_only=True) as con:
        (pid,) = con.execute("SELECT pair_id FROM pairs WHERE prompt = ?", [LONG_PROMPT]).fetchone()
    return tiny_db, pid


def cli(capsys, *argv) -> dict:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_score_leaves_out_and_reports_fully_truncated_pairs(
    long_db, tiny_model_dir, tiny_model_dir_b, capsys
):
    db, long_id = long_db
    out = cli(
        capsys, "score", "--db", str(db), "--dataset", "tiny", "--ref", str(tiny_model_dir),
        "--policy", str(tiny_model_dir_b), "--val", str(tiny_model_dir), "--max-length", "24",
    )  # fmt: skip
    with connect(db) as con:
        scores = engine.get_scores(con, "tiny", out["score_runs"])
        assert long_id not in set(scores["pair_id"]) and len(scores) == 6
        # the log-probs still hold it (flagged), the scores do not; the command reports it
        assert out["fully_truncated"] == {"n": 1, "pair_ids": [long_id]}
        lp = runs.list_logp_runs(con, "tiny")["run_id"].tolist()
        assert runs.fully_truncated_pairs(con, lp) == [long_id]
        cfg = runs.get_score_run_config(con, out["score_runs"]["lossdiff"])
        assert cfg["fully_truncated"] == {"n": 1, "pair_ids": [long_id]}
        # a middle-band rule counts it as missing: not kept, not exported
        rule = R.Intersect((R.Band("lossdiff", 10, 90), R.Band("irm", 10, 90)))
        create_selection(con, "mid", "tiny", rule, out["score_runs"], "train")
        assert long_id not in set(member_ids(con, "mid"))
        path = db.parent / "mid.jsonl"
        export_selection(con, "mid", path)
    assert LONG_PROMPT not in path.read_text()


def test_influence_leaves_out_fully_truncated_pairs(long_db, tiny_model_dir, tiny_model_dir_b, capsys):
    db, long_id = long_db
    out = cli(
        capsys, "influence", "--db", str(db), "--dataset", "tiny", "--policy", str(tiny_model_dir_b),
        "--ref", str(tiny_model_dir), "--max-length", "24", "--batch-tokens", "48",
    )  # fmt: skip
    with connect(db, read_only=True) as con:
        scores = engine.get_scores(con, "tiny", {"if": out["run_id"], "tif": out["tif_run_id"]})
    assert long_id not in set(scores["pair_id"]) and len(scores) == 6
    assert scores["if"].notna().all() and out["n_pairs"] == 6
    assert out["fully_truncated"]["n"] == 1 and out["fully_truncated"]["pair_ids"] == [long_id]


def test_demo_pipeline_scores_no_fully_truncated_pair(tiny_model_dir, tmp_path):
    """The demo at max_length 64 has pairs whose prompt fills it: none gets a score or is selected."""
    from prefsift.demo import DemoConfig, run_demo

    db = tmp_path / "demo64.duckdb"
    run_demo(
        DemoConfig(db=str(db), model=str(tiny_model_dir), limit=40, max_length=64, influence=False),
        echo=lambda *a: None,
    )
    with connect(db, read_only=True) as con:
        dropped = set(
            con.execute("SELECT pair_id FROM logps WHERE chosen_tokens = 0 OR rejected_tokens = 0").df()[
                "pair_id"
            ]
        )
        scored = set(con.execute("SELECT DISTINCT pair_id FROM scores").df()["pair_id"])
        kept = set(con.execute("SELECT DISTINCT pair_id FROM selection_members").df()["pair_id"])
    assert dropped, "the demo at max_length 64 should have fully truncated pairs"
    assert not dropped & scored
    assert not dropped & kept  # random baselines included: their draws leave them out too


def test_a_random_selection_draws_no_fully_truncated_pair(long_db, tiny_model_dir, tiny_model_dir_b, capsys):
    """A random rule reads no score, yet it never draws a fully truncated pair (under the
    tokenization of the dataset's scores) and sizes its draw without them; a selection saved
    from a member list that holds one is exported without it, and the manifest says so."""
    db, long_id = long_db
    cli(
        capsys, "score", "--db", str(db), "--dataset", "tiny", "--ref", str(tiny_model_dir),
        "--policy", str(tiny_model_dir_b), "--max-length", "24",
    )  # fmt: skip
    with connect(db) as con:
        sel = create_selection(con, "everything", "tiny", "random:1.0:seed=0", None, "train")
        members = pa.table({"pair_id": member_ids(con, "everything")})
        assert long_id not in set(members.column("pair_id").to_pylist()) and sel["n_kept"] == 6
        assert sel["resolved"]["n_truncated"] == 1
        half = create_selection(con, "half", "tiny", "random:0.5:seed=0", None, "train")
        assert half["n_kept"] == 3  # half of the 6 drawable pairs, not round(0.5 * 7) = 4
        listed = pa.concat_tables([members, pa.table({"pair_id": [long_id]})])
        save_selection(
            con,
            "listed",
            "tiny",
            "random:1.0:seed=0",
            engine.select(con, "tiny", "random:1.0").result,
            listed,
        )
    path = db.parent / "listed.jsonl"
    m = cli(capsys, "export", "--db", str(db), "--selection", "listed", "--out", str(path))
    assert LONG_PROMPT not in path.read_text() and m["rows"] == 6
    assert m["fully_truncated_left_out"] == {"n": 1, "pair_ids": [long_id]}
