"""Hostile input, property-based: CSV (formula prefixes, quoting tricks, BOM, invalid UTF-8),
JSON arrays, Parquet with bad cells, conversational messages with unknown roles, duplicates.

Each example writes one generated file, ingests it into its own dataset and checks the
promise: no crash, every good row stored with exactly its text (and its first row number),
every bad row in quarantine at its row number with the expected field and reason. The CSV
and conversational tests also export what was stored (Parquet and JSONL) and check that the
exported text equals the stored text: a formula-like text stays text, byte for byte.

Every generated bad row carries exactly one defect, so its expected (field, reason) does not
depend on the order in which ingestion checks the fields. tests/ingest/test_ingest_property.py
covers JSON Lines with mixed standard rows; this file covers the other readers and shapes.
"""

from __future__ import annotations

import csv
import io
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefsift.errors import UserError
from prefsift.ingest import ingest
from prefsift.storage import connect, pairs
from prefsift.storage.exports import ExportError, export_selection
from prefsift.storage.selections import create_selection

from .conftest import property_settings

MAX_CHARS = 300
_ids = itertools.count()

# ---------------------------------------------------------------- text generators
TRICKY = st.sampled_from(
    [
        '"', '""', ",", ";", "\n", "\r\n", "\r", "\t", "'", "\\", '\\"', "=", "+", "-", "@",
        "=1+1", "=cmd|' /C calc'!A0", '=HYPERLINK("http://evil.example")', "@SUM(A1:A9)", "+1-2",
        "\ufeff", "\u2028", "\u0085", "😀", "é", "ß", "\x1b[31m", "<script>x</script>", "'; DROP TABLE pairs; --",
    ]
)  # fmt: skip
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = (
    st.lists(st.one_of(st.text(CHARS, min_size=1, max_size=12), TRICKY), min_size=1, max_size=5)
    .map("".join)
    .filter(lambda s: s.strip())
)
FORMULA = st.tuples(st.sampled_from(["=", "+", "-", "@", "\t", "\r", "\t=", "\r=", "=="]), TEXT).map("".join)
CELL = st.one_of(TEXT, FORMULA)


def _distinct(c: str, r: str) -> str:
    return r if r != c else r + " (other)"


def _stored(db, name) -> tuple[list[dict], dict]:
    with connect(db, read_only=True) as con:
        try:
            kept = pairs.get_pairs(con, name).to_pylist()
        except Exception:  # noqa: BLE001 - no dataset row when nothing was valid
            kept = []
        q = pairs.get_quarantine(con, name, limit=100_000).to_dict(orient="records")
    return kept, {r["row_idx"]: (r["field"], r["reason"]) for r in q}


def _check(db, name, summary, n_rows, good: dict, bad: dict) -> list[dict]:
    """good: (prompt, chosen, rejected) -> first row index; bad: row index -> (field, reason)."""
    kept, quarantined = _stored(db, name)
    assert summary["rows_read"] == n_rows
    assert {(k["prompt"], k["chosen"], k["rejected"]): k["row_idx"] for k in kept} == good
    assert len(kept) == len(good)  # no duplicate pair stored twice
    assert quarantined == bad
    assert summary["quarantined"] == len(bad)
    assert summary["added"] == len(good)
    return kept


def _export_roundtrip(db, name, kept: list[dict], export_dir) -> None:
    """Export all stored pairs as Parquet and JSONL: the texts come back unchanged."""
    if not kept:
        return
    sel = f"all-{name}"
    with connect(db) as con:
        create_selection(con, sel, name, "random:1", split=None)
        for fmt in ("parquet", "jsonl"):
            export_selection(con, sel, export_dir / f"{sel}.{fmt}", fmt)
    stored = {k["pair_id"]: k for k in kept}
    conversational = kept[0]["kind"] == "conversational"
    from_parquet = pq.read_table(export_dir / f"{sel}.parquet").to_pylist()
    with open(export_dir / f"{sel}.jsonl", encoding="utf-8") as f:
        from_jsonl = [json.loads(line) for line in f]
    for rows in (from_parquet, from_jsonl):
        assert sorted(r["pair_id"] for r in rows) == sorted(stored)
        for r in rows:
            for part in ("prompt", "chosen", "rejected"):
                want = stored[r["pair_id"]][part]
                if conversational:
                    assert r[part] == json.loads(want)
                else:
                    assert isinstance(r[part], str) and r[part].encode("utf-8") == want.encode("utf-8")


# ---------------------------------------------------------------- CSV
CSV_KINDS = (
    "good",
    "good",
    "good",
    "nul",
    "empty",
    "huge",
    "same",
    "short",
    "long",
    "bad_utf8",
    "blank",
    "dup",
)
CSV_ROW = st.tuples(st.sampled_from(CSV_KINDS), CELL, CELL, CELL)


@property_settings(15)
@given(
    header=st.permutations(["prompt", "chosen", "rejected"]),
    rows=st.lists(CSV_ROW, min_size=1, max_size=14),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_csv_formulas_quoting_and_bad_cells(shm_dir, header, rows, bom, crlf):
    lines: list[bytes] = []
    good: dict = {}
    bad: dict = {}
    good_lines: list[bytes] = []

    def line(cells: list[str]) -> bytes:
        buf = io.StringIO()
        # A lone CR in a field is quoted only when CR is part of the line terminator: with
        # "\n" lines, quote everything (as many tools do), else the file says something else.
        if crlf:
            csv.writer(buf, lineterminator="\r\n").writerow(cells)
        else:
            csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL).writerow(cells)
        return buf.getvalue().encode("utf-8")

    for i, (kind, p, c, r) in enumerate(rows):
        r = _distinct(c, r)
        if kind == "dup" and good_lines:
            lines.append(good_lines[0])
            continue
        values = {"prompt": p, "chosen": c, "rejected": r}
        expected = None
        if kind == "nul":
            values["chosen"] = c + "\x00"
            expected = ("chosen", "NUL byte")
        elif kind == "empty":
            values["chosen"] = " \t "
            expected = ("chosen", "empty field")
        elif kind == "blank":  # ",,": every cell empty, the first checked is chosen
            values = {"prompt": "", "chosen": "", "rejected": ""}
            expected = ("chosen", "empty field")
        elif kind == "huge":
            values["chosen"] = "x" * (MAX_CHARS + 1)
            expected = ("chosen", "field too large")
        elif kind == "same":
            values["rejected"] = c
            expected = ("rejected", "chosen equals rejected")
        elif kind == "bad_utf8":
            values["chosen"] = "@@BAD@@"
            expected = ("", "undecodable text")
        cells = [values[h] for h in header]
        if kind == "short":
            cells = cells[:2]
            expected = (header[2], "missing field")
        elif kind == "long":
            cells = cells + ["=extra()", "more"]
        raw = line(cells)
        if kind == "bad_utf8":
            raw = raw.replace(b"@@BAD@@", b"ok \xff\xfe\xc3")
        lines.append(raw)
        if expected is None:
            good.setdefault((p, c, r), i)
            good_lines.append(raw)
        else:
            bad[i] = expected
    name = f"csv{next(_ids)}"
    src = shm_dir / f"{name}.csv"
    src.write_bytes((b"\xef\xbb\xbf" if bom else b"") + line(list(header)) + b"".join(lines))
    db = shm_dir / "csv.duckdb"
    summary = ingest(src, name, db=db, max_chars=MAX_CHARS)
    kept = _check(db, name, summary, len(rows), good, bad)
    _export_roundtrip(db, name, kept, shm_dir)


# ---------------------------------------------------------------- JSON arrays (.json)
NOT_OBJECT = st.one_of(
    st.integers(), st.text(max_size=5), st.none(), st.booleans(), st.lists(st.integers(), max_size=3),
    st.integers(1, 60).map(lambda d: json.loads("[" * d + "]" * d)),
)  # fmt: skip
JUNK = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
JSON_KINDS = ("good", "good", "good", "extra", "not_object", "wrong_chosen", "wrong_prompt", "missing_chosen", "nul", "huge", "same", "dup")  # fmt: skip
JSON_ROW = st.tuples(st.sampled_from(JSON_KINDS), TEXT, TEXT, TEXT, NOT_OBJECT, JUNK, st.integers(0, 3))


@property_settings(15)
@given(rows=st.lists(JSON_ROW, min_size=1, max_size=14), indent=st.sampled_from([None, 0, 2]))
def test_json_array_bad_elements_and_duplicates(shm_dir, rows, indent):
    elements: list = []
    good: dict = {}
    bad: dict = {}
    first_good = None
    for i, (kind, p, c, r, not_obj, junk, small_id) in enumerate(rows):
        r = _distinct(c, r)
        obj: object = {"prompt": p, "chosen": c, "rejected": r}
        expected = None
        if kind == "dup" and first_good is not None:
            # the same pair under another id: its content id makes it the same pair
            obj = {**first_good, "id": f"other-{i}"}
            p, c, r = first_good["prompt"], first_good["chosen"], first_good["rejected"]
        elif kind == "extra":  # duplicate ids, nested metadata, odd keys: kept (meta)
            obj = {**obj, "id": small_id, "meta": {"deep": json.loads("[" * 40 + "1" + "]" * 40)}, "é=": junk}
        elif kind == "not_object":
            obj, expected = not_obj, ("", "wrong type")
        elif kind == "wrong_chosen":
            wrong = junk if not isinstance(junk, str) else 1
            obj["chosen"], expected = wrong, ("chosen", "wrong type")
        elif kind == "wrong_prompt":
            obj["prompt"], expected = junk, ("prompt", "wrong type")
        elif kind == "missing_chosen":
            del obj["chosen"]
            expected = ("chosen", "missing field")
        elif kind == "nul":
            obj["rejected"], expected = r + "\x00", ("rejected", "NUL byte")
        elif kind == "huge":
            obj["prompt"], expected = "y" * (MAX_CHARS + 1), ("prompt", "field too large")
        elif kind == "same":
            obj["rejected"], expected = c, ("rejected", "chosen equals rejected")
        elements.append(obj)
        if expected is None:
            good.setdefault((p, c, r), i)
            first_good = first_good or obj
        else:
            bad[i] = expected
    name = f"json{next(_ids)}"
    src = shm_dir / f"{name}.json"
    src.write_text(json.dumps(elements, indent=indent, ensure_ascii=bool(len(rows) % 2)), encoding="utf-8")
    db = shm_dir / "json.duckdb"
    summary = ingest(src, name, db=db, max_chars=MAX_CHARS)
    _check(db, name, summary, len(rows), good, bad)


# ---------------------------------------------------------------- Parquet with bad cells
PQ_KINDS = ("good", "good", "good", "none_chosen", "none_prompt", "empty", "nul", "huge", "same", "dup")
PQ_ROW = st.tuples(
    st.sampled_from(PQ_KINDS), CELL, CELL, CELL, st.floats(), st.none() | st.lists(TEXT, max_size=2)
)


@property_settings(15)
@given(
    rows=st.lists(PQ_ROW, min_size=1, max_size=14),
    large=st.booleans(),
    group=st.integers(1, 6),
)
def test_parquet_bad_cells(shm_dir, rows, large, group):
    cols: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "score": [], "tags": []}
    good: dict = {}
    bad: dict = {}
    for i, (kind, p, c, r, score, tags) in enumerate(rows):
        r = _distinct(c, r)
        if kind == "dup" and good:
            p, c, r = next(iter(good))
        values, expected = {"prompt": p, "chosen": c, "rejected": r}, None
        if kind == "none_chosen":
            values["chosen"], expected = None, ("chosen", "missing field")
        elif kind == "none_prompt":
            values["prompt"], expected = None, ("prompt", "missing field")
        elif kind == "empty":
            values["rejected"], expected = "", ("rejected", "empty field")
        elif kind == "nul":
            values["prompt"], expected = "\x00" + p, ("prompt", "NUL byte")
        elif kind == "huge":
            values["rejected"], expected = "z" * (MAX_CHARS + 1), ("rejected", "field too large")
        elif kind == "same":
            values["rejected"], expected = c, ("rejected", "chosen equals rejected")
        for k, v in values.items():
            cols[k].append(v)
        cols["score"].append(score)  # NaN / inf ride along in meta
        cols["tags"].append(tags)
        if expected is None:
            good.setdefault((p, c, r), i)
        else:
            bad[i] = expected
    text_type = pa.large_string() if large else pa.string()
    table = pa.table(
        {
            **{k: pa.array(cols[k], text_type) for k in ("prompt", "chosen", "rejected")},
            "score": pa.array(cols["score"], pa.float64()),
            "tags": pa.array(cols["tags"], pa.list_(pa.string())),
        }
    )
    name = f"pq{next(_ids)}"
    src = shm_dir / f"{name}.parquet"
    pq.write_table(table, src, row_group_size=group)
    db = shm_dir / "parquet.duckdb"
    summary = ingest(src, name, db=db, max_chars=MAX_CHARS)
    _check(db, name, summary, len(rows), good, bad)


# ---------------------------------------------------------------- conversational messages
BAD_ROLES = st.one_of(
    st.sampled_from(["User", "ASSISTANT", "human", "gpt", "assistant ", " user", "", "System", "function"]),
    st.text(max_size=8).filter(lambda s: s not in ("system", "user", "assistant", "tool")),
)
ROLE = st.sampled_from(["system", "user", "assistant", "tool"])
MESSAGE = st.fixed_dictionaries({"role": ROLE, "content": TEXT})
MESSAGES = st.lists(MESSAGE, min_size=1, max_size=3)
# defect -> (how to break a message list, reason)
CONV_DEFECTS = {
    "unknown_role": "bad message role",
    "role_not_str": "bad message role",
    "content_not_str": "wrong type",
    "not_a_dict": "wrong type",
    "missing_key": "wrong type",
    "empty_list": "empty field",
    "nul": "NUL byte",
}
CONV_ROW = st.tuples(
    st.sampled_from(["good", "good", "good", "str_prompt", "same", *CONV_DEFECTS]),
    MESSAGES, MESSAGES, MESSAGES,
    st.sampled_from(["prompt", "chosen", "rejected"]),
    BAD_ROLES, st.integers(0, 2), JUNK,
)  # fmt: skip


def _break(msgs: list, defect: str, bad_role: str, at: int, junk) -> list:
    msgs = [dict(m) for m in msgs]
    j = at % len(msgs)
    if defect == "unknown_role":
        msgs[j]["role"] = bad_role
    elif defect == "role_not_str":
        msgs[j]["role"] = junk if not isinstance(junk, str) else 3
    elif defect == "content_not_str":
        msgs[j]["content"] = junk if not isinstance(junk, str) else None
    elif defect == "not_a_dict":
        msgs[j] = msgs[j]["content"]
    elif defect == "missing_key":
        del msgs[j]["role" if at % 2 else "content"]
    elif defect == "empty_list":
        msgs = []
    elif defect == "nul":
        msgs[j]["content"] += "\x00"
    return msgs


def _canonical(msgs: list) -> list:
    """Messages as stored: role then content, other keys dropped."""
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


@property_settings(15)
@given(rows=st.lists(CONV_ROW, min_size=1, max_size=12))
def test_conversational_roles_and_messages(shm_dir, rows):
    lines, good, bad = [], {}, {}
    for i, (kind, prompt, chosen, rejected, where, bad_role, at, junk) in enumerate(rows):
        if chosen == rejected:
            rejected = [*rejected, {"role": "assistant", "content": "other"}]
        row: dict = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        stored_prompt = prompt
        expected = None
        if kind == "str_prompt":  # a plain-text prompt becomes one user message
            row["prompt"] = prompt[0]["content"]
            stored_prompt = [{"role": "user", "content": prompt[0]["content"]}]
        elif kind == "same":
            row["rejected"], expected = chosen, ("rejected", "chosen equals rejected")
        elif kind in CONV_DEFECTS:
            row[where] = _break(row[where], kind, bad_role, at, junk)
            expected = (where, CONV_DEFECTS[kind])
        lines.append(json.dumps(row, ensure_ascii=False))
        if expected is None:
            key = tuple(
                json.dumps(_canonical(x), ensure_ascii=False) for x in (stored_prompt, chosen, rejected)
            )
            good.setdefault(key, i)
        else:
            bad[i] = expected
    name = f"conv{next(_ids)}"
    src = shm_dir / f"{name}.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = shm_dir / "conv.duckdb"
    summary = ingest(src, name, db=db, max_chars=MAX_CHARS)
    kept = _check(db, name, summary, len(rows), good, bad)
    assert all(k["kind"] == "conversational" for k in kept)
    _export_roundtrip(db, name, kept, shm_dir)


# ---------------------------------------------------------------- fixed hostile cases
def test_huge_fields_and_deep_nesting_jsonl(tmp_path):
    """A 5-million-character field and a 100,000-deep JSON line are quarantined, the rest kept."""
    src = tmp_path / "h.jsonl"
    with open(src, "wb") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "c" * 5_000_000, "rejected": "r"}).encode() + b"\n")
        f.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
        f.write(
            json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "x": "m" * 1_000_000}).encode() + b"\n"
        )
    db = tmp_path / "h.duckdb"
    s = ingest(src, "h", db=db)
    assert (s["rows_read"], s["added"], s["quarantine_reasons"]) == (
        3,
        1,
        {"field too large": 1, "malformed JSON": 1},
    )
    _, q = _stored(db, "h")
    assert q == {0: ("chosen", "field too large"), 1: ("", "malformed JSON")}


def test_json_array_too_deep_is_refused_cleanly(tmp_path):
    """A .json array whose element nests 100,000 deep: a clear UserError naming the element, the
    elements before it kept, the break in quarantine (was: RecursionError escaping from
    prefsift/sources.py read_json). A JSON array cannot be resumed after a bad element."""
    src = tmp_path / "deep.json"
    src.write_text('[{"prompt": "a", "chosen": "b", "rejected": "c"}, ' + "[" * 100_000 + "]" * 100_000 + "]")
    db = tmp_path / "deep.duckdb"
    with pytest.raises(UserError, match="breaks off at row 1: malformed or truncated JSON array"):
        ingest(src, "deep", db=db)
    kept, q = _stored(db, "deep")
    assert [r["row_idx"] for r in kept] == [0] and q == {1: ("", "file breaks off")}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_utf8_bom_is_not_data(tmp_path, suffix):
    """Excel's "CSV UTF-8" and Windows editors start files with a BOM; it must not rename the
    first column (was: every CSV row quarantined as "no shared prompt")."""
    src = tmp_path / f"bom{suffix}"
    if suffix == ".csv":
        body = "prompt,chosen,rejected\n=1+1,+yes,-no\n"
    else:
        body = json.dumps({"prompt": "=1+1", "chosen": "+yes", "rejected": "-no"}) + "\n"
    src.write_bytes(b"\xef\xbb\xbf" + body.encode())
    db = tmp_path / "bom.duckdb"
    s = ingest(src, "bom", db=db)
    kept, q = _stored(db, "bom")
    assert s["added"] == 1 and q == {}
    assert (kept[0]["prompt"], kept[0]["chosen"], kept[0]["rejected"]) == ("=1+1", "+yes", "-no")


def test_reingest_duplicates_is_idempotent(tmp_path):
    rows = [{"id": 1, "prompt": "p", "chosen": "c", "rejected": "r"}] * 3 + [
        {"id": 1, "prompt": "p", "chosen": "c2", "rejected": "r"}
    ]
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    db = tmp_path / "d.duckdb"
    first = ingest(src, "d", db=db)
    again = ingest(src, "d", db=db)
    kept, q = _stored(db, "d")
    assert (first["valid"], first["added"], again["added"]) == (4, 2, 0)
    assert len(kept) == 2 and q == {}


def test_no_csv_export_is_offered(tmp_path):
    """Exports are Parquet/JSONL only: no text can become a spreadsheet formula on opening."""
    src = tmp_path / "f.jsonl"
    src.write_text(json.dumps({"prompt": "=1+1", "chosen": "@SUM(A1)", "rejected": "-2"}) + "\n")
    db = tmp_path / "f.duckdb"
    ingest(src, "f", db=db)
    with connect(db) as con:
        create_selection(con, "s", "f", "random:1", split=None)
        with pytest.raises(ExportError, match="CSV"):
            export_selection(con, "s", tmp_path / "out.csv", "csv")
    assert not (tmp_path / "out.csv").exists()


def test_first_row_missing_prompt_does_not_reinterpret_the_file(tmp_path):
    rows = [
        {"chosen": "the answer is yes", "rejected": "the answer is no"},
        {"prompt": "what is 2+2?", "chosen": "it is four", "rejected": "it is five"},
        {"prompt": "capital?", "chosen": "paris", "rejected": "rome"},
    ]
    src = tmp_path / "m.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    db = tmp_path / "m.duckdb"
    ingest(src, "m", db=db)
    kept, _ = _stored(db, "m")
    texts = {(k["prompt"], k["chosen"], k["rejected"]) for k in kept}
    assert ("what is 2+2?", "it is four", "it is five") in texts
    assert ("capital?", "paris", "rome") in texts


def test_csv_duplicate_header_is_not_silently_resolved(tmp_path):
    src = tmp_path / "dup.csv"
    src.write_text("prompt,chosen,chosen,rejected\np,first,second,r\n")
    db = tmp_path / "dup.duckdb"
    try:
        s = ingest(src, "dup", db=db)
    except UserError:
        return  # refusing the file is a fine answer
    assert s["added"] == 0 and s["quarantined"] == 1


def test_conversational_empty_response_is_quarantined(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": ""}],
        "rejected": [{"role": "assistant", "content": "hello"}],
    }
    src = tmp_path / "e.jsonl"
    src.write_text(json.dumps(row) + "\n")
    s = ingest(src, "e", db=tmp_path / "e.duckdb")
    assert s["added"] == 0 and s["quarantine_reasons"] == {"empty field": 1}


def test_json_array_with_bom(tmp_path):
    src = tmp_path / "bom.json"
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p2", "chosen": "c", "rejected": "r"}]
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows, indent=2).encode())
    s = ingest(src, "bomarr", db=tmp_path / "b.duckdb")
    assert (s["added"], s["quarantined"]) == (2, 0)
