"""CLI conventions: options common to every command before or after it, strict JSON output,
`info --quarantine` printing each section once."""

from __future__ import annotations

import json

import pytest

from prefsift.cli import main
from prefsift.storage import connect, runs
from tests.conftest import write_jsonl


def _strict(text: str):
    """json.loads as jq or JavaScript read it: NaN and Infinity are errors."""

    def refuse(const):
        raise ValueError(f"not JSON: {const}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture()
def small_db(tmp_path, db_path, tiny_pairs):
    bad = [{"prompt": "p", "chosen": "same", "rejected": "same"}]
    main(
        [
            "ingest",
            str(write_jsonl(tmp_path / "a.jsonl", tiny_pairs + bad)),
            "--name",
            "d",
            "--db",
            str(db_path),
        ]
    )
    with connect(db_path) as con:  # a model without adapter next to one with: a missing value
        runs.register_model(con, "m-plain", "some/model", name="plain")
        runs.register_model(con, "m-lora", "some/model", name="lora", adapter_path="/x/adapter")
    return db_path


@pytest.mark.parametrize(
    "argv",
    [
        ["--db", "{db}", "info"],
        ["--db", "{db}", "--json", "-v", "info"],
        ["-v", "--json", "info", "--db", "{db}"],
        ["info", "--db", "{db}", "--json"],
        ["--db", "elsewhere.duckdb", "info", "--db", "{db}", "--json"],  # the closer one wins
    ],
)
def test_common_options_before_or_after_the_command(small_db, capsys, argv):
    argv = [a.replace("{db}", str(small_db)) for a in argv]
    assert main(argv) == 0
    out = capsys.readouterr().out
    if "--json" in argv:
        assert _strict(out)["datasets"][0]["name"] == "d"
    else:
        assert "== datasets (1)" in out


def test_db_before_ingest(tmp_path, db_path, tiny_pairs):
    """`prefsift --db X ingest …` used to be refused (invalid choice: 'X')."""
    src = write_jsonl(tmp_path / "a.jsonl", tiny_pairs)
    assert main(["--db", str(db_path), "ingest", str(src), "--name", "d"]) == 0
    assert db_path.exists()


def test_json_is_strict_with_null_for_missing_and_no_internal_keys(small_db, tmp_path, capsys):
    assert main(["info", "--db", str(small_db), "--json", "--dataset", "d", "--quarantine"]) == 0
    info = _strict(capsys.readouterr().out)
    assert not [k for k in info if k.startswith("_")]
    models = {m["name"]: m for m in info["models"]}
    assert models["plain"]["adapter_path"] is None and models["lora"]["adapter_path"] == "/x/adapter"
    assert info["datasets"][0]["pairs"] == 8  # numbers stay numbers
    assert [q["reason"] for q in info["quarantined_rows"]] == ["chosen equals rejected"]
    src = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    assert main(["ingest", str(src), "--name", "e", "--db", str(small_db), "--json"]) == 0
    out = _strict(capsys.readouterr().out)
    assert "_exit" not in out and "_text" not in out and out["added"] == 1


@pytest.mark.parametrize("dataset", [["--dataset", "d"], []])
def test_info_quarantine_prints_each_section_once(small_db, capsys, dataset):
    assert main(["info", "--db", str(small_db), "--quarantine", *dataset]) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("== ")]
    assert len(headers) == len(set(headers)), headers
    assert "== quarantined_rows (1)" in headers  # with or without --dataset
    assert "chosen equals rejected" in out
