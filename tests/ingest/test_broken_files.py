"""Broken containers: a truncated .gz, a truncated Parquet file, a CSV cut inside a quoted field,
a truncated JSON array, an empty file, a directory. Each ends in one line that names the file and
the row where it broke, exit 2, no traceback; the rows before the break are kept and counted,
and the break is recorded in quarantine, so ingesting the complete file later adds the rest."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefsift.cli import main
from prefsift.storage import connect, pairs

ROWS = [
    {"prompt": f"question {i} " + "x" * 40, "chosen": f"good {i}", "rejected": f"bad {i}"}
    for i in range(3000)
]


def _ingest(capsys, path, db, name="d") -> tuple[int, list[str]]:
    rc = main(["ingest", str(path), "--name", name, "--db", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _stored(db, name="d") -> tuple[list[int], list[dict]]:
    if not db.exists():  # nothing was ever written
        return [], []
    with connect(db, read_only=True) as con:
        if name not in set(pairs.list_datasets(con)["name"]):
            return [], []
        rows = sorted(pairs.get_pairs(con, name, columns=("row_idx",)).column("row_idx").to_pylist())
        return rows, pairs.get_quarantine(con, name, limit=100).to_dict(orient="records")


def _complete_lines(truncated_gz: bytes) -> int:
    """How many whole lines a truncated gzip stream still holds."""
    data = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(truncated_gz)
    return data.count(b"\n")


def test_truncated_gz_keeps_the_rows_before_the_break(tmp_path, db_path, capsys):
    full = "\n".join(json.dumps(r) for r in ROWS).encode() + b"\n"
    gz = gzip.compress(full)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gz[: len(gz) // 2])
    n_before = _complete_lines(gz[: len(gz) // 2])
    assert 0 < n_before < len(ROWS)

    rc, err = _ingest(capsys, path, db_path)
    assert rc == 2 and len(err) == 1, err
    assert "cut.jsonl.gz" in err[0] and f"row {n_before:,}" in err[0] and "kept" in err[0]
    kept, quarantine = _stored(db_path)
    assert kept == list(range(n_before))  # every good row before the break, and nothing after
    assert [(q["row_idx"], q["reason"]) for q in quarantine] == [(n_before, "file breaks off")]

    # ingesting the complete file adds exactly the rest, and the break record goes
    path.write_bytes(gz)
    assert main(["ingest", str(path), "--name", "d", "--db", str(db_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == len(ROWS) - n_before
    kept, quarantine = _stored(db_path)
    assert kept == list(range(len(ROWS))) and quarantine == []


def test_not_gzip_at_all(tmp_path, db_path, capsys):
    path = tmp_path / "plain.jsonl.gz"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    rc, err = _ingest(capsys, path, db_path)
    assert rc == 2 and len(err) == 1 and "plain.jsonl.gz" in err[0] and "row 0" in err[0], err
    assert "nothing ingested" in err[0] and _stored(db_path) == ([], [])


def test_truncated_parquet_is_refused_whole(tmp_path, db_path, capsys):
    """A Parquet file's row index is its footer, at the end: a truncated one has no readable row."""
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), buf, row_group_size=500)
    path = tmp_path / "cut.parquet"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    rc, err = _ingest(capsys, path, db_path)
    assert rc == 2 and len(err) == 1, err
    assert (
        "cut.parquet" in err[0] and "row 0" in err[0] and "footer" in err[0] and "nothing ingested" in err[0]
    )
    assert _stored(db_path) == ([], [])


def _csv(rows) -> str:
    s = io.StringIO()
    w = csv.DictWriter(s, ["prompt", "chosen", "rejected"])
    w.writeheader()
    for r in rows:
        w.writerow({**r, "chosen": r["chosen"] + '\nwith "quotes", and a second line'})
    return s.getvalue()


def test_csv_cut_inside_a_quoted_field(tmp_path, db_path, capsys):
    text = _csv(ROWS[:10])
    cut = text.index('with "', text.index("good 9"))  # inside row 9's quoted field
    path = tmp_path / "cut.csv"
    path.write_text(text[:cut])
    rc, err = _ingest(capsys, path, db_path)
    assert rc == 2 and len(err) == 1, err
    assert "cut.csv" in err[0] and "row 9" in err[0] and "quoted field" in err[0]
    kept, quarantine = _stored(db_path)
    assert kept == list(range(9))
    assert [q["row_idx"] for q in quarantine] == [9]
    # the same file, whole, is fine: a quoted field across lines is not a break
    path.write_text(text)
    rc, err = _ingest(capsys, path, db_path)
    assert (rc, err) == (0, [])
    assert _stored(db_path) == (list(range(10)), [])


def test_truncated_json_array_keeps_the_elements_before(tmp_path, db_path, capsys):
    text = json.dumps(ROWS[:50])
    cut = text.index("good 30")
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    rc, err = _ingest(capsys, path, db_path)
    assert rc == 2 and len(err) == 1 and "cut.json" in err[0] and "row 30" in err[0], err
    assert _stored(db_path)[0] == list(range(30))


@pytest.mark.parametrize("name", ["e.jsonl", "e.json", "e.csv", "e.parquet", "e.jsonl.gz"])
def test_empty_file(tmp_path, db_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(b"")
    rc, err = _ingest(capsys, path, db_path)
    assert rc == 2 and len(err) == 1 and name in err[0] and "is empty" in err[0], err


@pytest.mark.parametrize("name", ["folder", "folder.jsonl"])
def test_a_directory_as_source(tmp_path, db_path, capsys, name):
    (tmp_path / name).mkdir()
    rc, err = _ingest(capsys, tmp_path / name, db_path)
    assert rc == 2 and len(err) == 1 and name in err[0] and "is a directory" in err[0], err
