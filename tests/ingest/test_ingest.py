"""Ingestion: every format, idempotency, quarantine with row/field/reason, CLI behaviour."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefsift.cli import main
from prefsift.errors import UserError
from prefsift.ingest import ingest
from prefsift.storage import connect, pairs
from tests.conftest import ALPACA_FILE, HH_FILE, requires_shared_data, write_jsonl

HH_ROWS = [
    {
        "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 9 minutes.",
        "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: I don't know.",
    },
    {
        "chosen": "\n\nHuman: hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?",
        "rejected": "\n\nHuman: hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No.",
    },
    {  # both answers start with the same word: the prompt must stop at the assistant mark
        "chosen": "\n\nHuman: Is it safe?\n\nAssistant: It is safe if you wear gloves.",
        "rejected": "\n\nHuman: Is it safe?\n\nAssistant: It is totally fine, no gloves needed.",
    },
]


def _pairs(db, name):
    with connect(db, read_only=True) as con:
        return pairs.get_pairs(con, name).to_pylist()


def _quarantine(db, name):
    with connect(db, read_only=True) as con:
        return pairs.get_quarantine(con, name, limit=1000).to_dict(orient="records")


def test_standard_jsonl_and_idempotent(tmp_path, db_path, tiny_pairs):
    src = write_jsonl(tmp_path / "a.jsonl", tiny_pairs)
    s = ingest(src, "d", db=db_path)
    assert (s["rows_read"], s["added"], s["quarantined"], s["format"]) == (8, 8, 0, "standard")
    again = ingest(src, "d", db=db_path)
    assert again["added"] == 0 and again["duplicates_or_existing"] == 8
    rows = _pairs(db_path, "d")
    assert len(rows) == 8 and len({r["pair_id"] for r in rows}) == 8
    assert rows[0]["prompt"] == tiny_pairs[0]["prompt"] and rows[0]["chosen"] == tiny_pairs[0]["chosen"]


def test_implicit_prompt_split(tmp_path, db_path):
    s = ingest(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS), "hh", db=db_path)
    assert s["format"] == "implicit" and s["added"] == 3
    rows = {r["row_idx"]: r for r in _pairs(db_path, "hh")}
    assert rows[0]["prompt"] == "\n\nHuman: How do I boil an egg?\n\nAssistant:"
    assert rows[0]["chosen"] == " Put it in boiling water for 9 minutes."
    assert rows[0]["rejected"] == " I don't know."
    assert (
        rows[1]["prompt"].endswith("Tell me a joke\n\nAssistant:")
        and rows[1]["prompt"].count("Assistant:") == 2
    )
    assert rows[2]["chosen"] == " It is safe if you wear gloves."
    assert rows[2]["rejected"] == " It is totally fine, no gloves needed."


def test_conversational_and_bad_roles(tmp_path, db_path):
    good = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello there"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }
    bad_role = {**good, "chosen": [{"role": "wizard", "content": "abracadabra"}]}
    s = ingest(write_jsonl(tmp_path / "c.jsonl", [good, bad_role]), "c", db=db_path)
    assert s["format"] == "conversational" and s["added"] == 1
    (q,) = _quarantine(db_path, "c")
    assert (q["row_idx"], q["field"], q["reason"]) == (1, "chosen", "bad message role")
    (row,) = _pairs(db_path, "c")
    assert row["kind"] == "conversational" and json.loads(row["chosen"]) == good["chosen"]


def test_implicit_conversational(tmp_path, db_path):
    conv = [{"role": "user", "content": "2+2?"}]
    row = {
        "chosen": conv + [{"role": "assistant", "content": "4"}],
        "rejected": conv + [{"role": "assistant", "content": "5"}],
    }
    s = ingest(write_jsonl(tmp_path / "ic.jsonl", [row]), "ic", db=db_path)
    assert s["format"] == "implicit"
    (r,) = _pairs(db_path, "ic")
    assert json.loads(r["prompt"]) == conv and json.loads(r["chosen"]) == [
        {"role": "assistant", "content": "4"}
    ]


def test_pairwise_mapping_ties_and_labels(tmp_path, db_path):
    rows = [
        {"instruction": "say hi", "output_1": "hi", "output_2": "bye", "preference": 1},
        {"instruction": "say bye", "output_1": "hi", "output_2": "bye", "preference": 2},
        {"instruction": "say yo", "output_1": "yo", "output_2": "hey", "preference": 0},
    ]
    path = tmp_path / "ae.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(rows, f)
    s = ingest(path, "ae", db=db_path)
    assert s["format"] == "pairwise" and s["added"] == 2 and s["quarantine_reasons"] == {"tie": 1}
    got = {r["prompt"]: (r["chosen"], r["rejected"]) for r in _pairs(db_path, "ae")}
    assert got == {"say hi": ("hi", "bye"), "say bye": ("bye", "hi")}


def test_explicit_map_csv_parquet(tmp_path, db_path):
    path = tmp_path / "x.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["q", "good", "bad"])
        w.writeheader()
        w.writerow({"q": "why?", "good": "because", "bad": "no"})
        w.writerow({"q": "", "good": "a", "bad": "b"})
    rc = main(
        [
            "ingest",
            str(path),
            "--name",
            "csvd",
            "--db",
            str(db_path),
            "--map",
            "prompt=q",
            "--map",
            "chosen=good",
            "--map",
            "rejected=bad",
        ]
    )
    assert rc == 0
    assert [q["reason"] for q in _quarantine(db_path, "csvd")] == ["empty field"]
    pq.write_table(
        pa.table({"prompt": ["p1", "p2"], "chosen": ["c1", "same"], "rejected": ["r1", "same"]}),
        tmp_path / "y.parquet",
    )
    s = ingest(tmp_path / "y.parquet", "pq", db=db_path)
    assert s["added"] == 1 and s["quarantine_reasons"] == {"chosen equals rejected": 1}


def test_bad_rows_are_quarantined_with_reason(tmp_path, db_path, tiny_pairs):
    lines = [
        json.dumps(tiny_pairs[0]).encode(),
        b"{not json",
        b"\xff\xfe bad utf8",
        json.dumps([1, 2]).encode(),
    ]
    lines += [json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"}).encode()]
    lines += [json.dumps({"prompt": "p", "chosen": "x" * 50, "rejected": "r"}).encode()]
    lines += [json.dumps({"prompt": "p", "chosen": "a\x00b", "rejected": "r"}).encode()]
    lines += [json.dumps({"prompt": "p", "rejected": "r"}).encode()]
    lines += [json.dumps(tiny_pairs[1]).encode()]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    s = ingest(path, "bad", db=db_path, max_chars=40)
    assert s["added"] == 2
    got = {(q["row_idx"], q["field"], q["reason"]) for q in _quarantine(db_path, "bad")}
    assert got == {
        (1, "", "malformed JSON"),
        (2, "", "undecodable text"),
        (3, "", "wrong type"),
        (4, "chosen", "wrong type"),
        (5, "chosen", "field too large"),
        (6, "chosen", "NUL byte"),
        (7, "chosen", "missing field"),
    }
    # re-ingesting replaces the quarantine rows of this source instead of doubling them
    ingest(path, "bad", db=db_path, max_chars=40)
    assert len(_quarantine(db_path, "bad")) == 7


def test_cli_errors_are_one_line(tmp_path, db_path, capsys):
    assert main(["ingest", str(tmp_path / "missing.jsonl"), "--name", "x", "--db", str(db_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    path = write_jsonl(tmp_path / "weird.jsonl", [{"foo": 1}])
    assert main(["ingest", str(path), "--name", "w", "--db", str(db_path)]) == 1
    with pytest.raises(UserError):
        ingest(path, "bad name!", db=db_path)


def test_json_output(tmp_path, db_path, tiny_pairs, capsys):
    path = write_jsonl(tmp_path / "a.jsonl", tiny_pairs)
    assert main(["ingest", str(path), "--name", "j", "--db", str(db_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == 8
    assert main(["info", "--db", str(db_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["datasets"][0]["pairs"] == 8


def test_newer_schema_is_refused(db_path, tiny_pairs, tmp_path, capsys):
    ingest(write_jsonl(tmp_path / "a.jsonl", tiny_pairs), "d", db=db_path)
    with connect(db_path) as con:
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')")
    assert main(["info", "--db", str(db_path)]) == 2
    assert "newer" in capsys.readouterr().err


@requires_shared_data()
def test_real_hh_and_alpaca(db_path):
    s = ingest(HH_FILE, "hh", db=db_path)
    assert s["rows_read"] == 2312 and s["valid"] + s["quarantined"] == 2312 and s["added"] == s["valid"]
    a = ingest(ALPACA_FILE, "alpaca", db=db_path)
    assert (a["added"], a["quarantine_reasons"]) == (789, {"tie": 16})
    assert ingest(HH_FILE, "hh", db=db_path)["added"] == 0
    assert ingest(ALPACA_FILE, "alpaca", db=db_path)["added"] == 0
    for r in _pairs(db_path, "hh")[:200]:
        assert r["prompt"].startswith("\n\nHuman:") and r["prompt"].endswith("\n\nAssistant:")


def test_chat_option_wraps_text_pairs(tmp_path, db_path, tiny_pairs):
    s = ingest(write_jsonl(tmp_path / "a.jsonl", tiny_pairs[:2]), "chat", db=db_path, chat=True)
    assert s["added"] == 2
    rows = _pairs(db_path, "chat")
    assert all(r["kind"] == "conversational" for r in rows)
    first = next(r for r in rows if r["row_idx"] == 0)
    assert json.loads(first["prompt"]) == [{"role": "user", "content": tiny_pairs[0]["prompt"]}]
    assert json.loads(first["chosen"]) == [{"role": "assistant", "content": tiny_pairs[0]["chosen"]}]


def test_cli_chat_option_reaches_ingest(tmp_path, db_path, tiny_pairs, capsys):
    """`prefsift ingest --chat` stores conversations (the option used to be accepted and ignored)."""
    path = write_jsonl(tmp_path / "a.jsonl", tiny_pairs[:2])
    assert main(["ingest", str(path), "--name", "c", "--db", str(db_path), "--chat"]) == 0
    rows = _pairs(db_path, "c")
    assert [r["kind"] for r in rows] == ["conversational"] * 2
    first = next(r for r in rows if r["row_idx"] == 0)
    assert json.loads(first["prompt"]) == [{"role": "user", "content": tiny_pairs[0]["prompt"]}]


def test_chat_turns_of_an_hh_transcript(tmp_path, db_path):
    """--chat on HH-RLHF text: the transcript's turns become messages, not one user message
    holding "Human:"/"Assistant:" markup."""
    ingest(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS), "hh", db=db_path, chat=True)
    rows = {r["row_idx"]: r for r in _pairs(db_path, "hh")}
    assert json.loads(rows[1]["prompt"]) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert json.loads(rows[1]["chosen"]) == [
        {"role": "assistant", "content": "Why did the chicken cross the road?"}
    ]
    assert json.loads(rows[2]["rejected"]) == [
        {"role": "assistant", "content": "It is totally fine, no gloves needed."}
    ]


@pytest.mark.parametrize(
    ("prompt", "response", "glued"),
    [
        ("Summarize this word", "The answer", True),  # word glued to word
        ("Answer: ", "Paris", True),  # the space joins the next word
        ("List them.", "- a", True),  # punctuation glued to punctuation
        ("Q\n", "\nA", True),  # whitespace runs merge
        ("\n\nHuman: hi\n\nAssistant:", " Hello", False),  # HH-RLHF: clean
        ("What is it?\n", "Paris", False),
        ("What is it?", "Paris", False),  # tokenizer-dependent: left to `prefsift score`
    ],
)
def test_glued_boundary(prompt, response, glued):
    from prefsift.formats import glued_boundary

    assert glued_boundary(prompt, response) is glued


def test_ingest_says_when_prompt_and_answer_are_glued(tmp_path, db_path, capsys):
    rows = [
        {"prompt": "Name a colour:", "chosen": " red", "rejected": " none"},  # clean
        {"prompt": "Name a colour: ", "chosen": "red", "rejected": "none"},  # trailing space
        {"prompt": "Name a fruit", "chosen": "Apple", "rejected": "No"},  # glued words
    ]
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    assert main(["ingest", str(path), "--name", "g", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert "2 of 3 plain-text pairs" in out and "--chat" in out and "is not a prefix" in out
    assert main(["ingest", str(path), "--name", "gc", "--db", str(db_path), "--json", "--chat"]) == 0
    assert json.loads(capsys.readouterr().out)["glued_boundary"] == 0  # turns: the template marks them
