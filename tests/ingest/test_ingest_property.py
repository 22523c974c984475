"""Property-based: malformed rows mixed with good ones. No crash, every good row kept,
every bad row quarantined at its row number with the right reason."""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefsift.ingest import ingest
from prefsift.storage import connect, pairs

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: s.strip()
)
_counter = itertools.count()

# kind -> (line bytes, expected (field, reason)) ; None = a good row
BAD_KINDS = {
    "missing": (
        lambda p, c, r: json.dumps({"prompt": p, "rejected": r}).encode(),
        ("chosen", "missing field"),
    ),
    "empty": (
        lambda p, c, r: json.dumps({"prompt": p, "chosen": "  ", "rejected": r}).encode(),
        ("chosen", "empty field"),
    ),
    "wrong_type": (
        lambda p, c, r: json.dumps({"prompt": p, "chosen": [1, {"a": 2}], "rejected": r}).encode(),
        ("chosen", "wrong type"),
    ),
    "number": (
        lambda p, c, r: json.dumps({"prompt": 7, "chosen": c, "rejected": r}).encode(),
        ("prompt", "wrong type"),
    ),
    "same": (
        lambda p, c, r: json.dumps({"prompt": p, "chosen": c, "rejected": c}).encode(),
        ("rejected", "chosen equals rejected"),
    ),
    "nul": (
        lambda p, c, r: json.dumps({"prompt": p, "chosen": c + "\x00", "rejected": r}).encode(),
        ("chosen", "NUL byte"),
    ),
    "huge": (
        lambda p, c, r: json.dumps({"prompt": p, "chosen": "x" * 300, "rejected": r}).encode(),
        ("chosen", "field too large"),
    ),
    "surrogate": (
        lambda p, c, r: b'{"prompt": "p", "chosen": "\\ud800x", "rejected": "r"}',
        ("chosen", "undecodable text"),
    ),
    "bad_json": (lambda p, c, r: b'{"prompt": "' + p.encode() + b'", "chosen": ', ("", "malformed JSON")),
    "bad_utf8": (
        lambda p, c, r: b'{"prompt": "\xff\xfe", "chosen": "a", "rejected": "b"}',
        ("", "undecodable text"),
    ),
    "not_object": (lambda p, c, r: json.dumps([p, c, r]).encode(), ("", "wrong type")),
    "deep": (lambda p, c, r: b"[" * 100_000 + b"]" * 100_000, ("", "malformed JSON")),
    "deep_field": (
        lambda p, c, r: json.dumps({"prompt": p, "chosen": [[[[c]]]], "rejected": r}).encode(),
        ("chosen", "wrong type"),
    ),
}

ROW = st.one_of(
    st.tuples(st.just("good"), TEXT, TEXT, TEXT),
    st.tuples(st.sampled_from(sorted(BAD_KINDS)), TEXT, TEXT, TEXT),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(ROW, min_size=1, max_size=12))
def test_mixed_rows(tmp_path_factory, rows):
    tmp = tmp_path_factory.getbasetemp()
    db = tmp / "property.duckdb"  # one database, a new dataset per example
    lines, expect_bad, good = [], {}, {}
    for i, (kind, p, c, r) in enumerate(rows):
        if kind == "good":
            if c == r:
                r = r + " (other)"
            lines.append(json.dumps({"prompt": p, "chosen": c, "rejected": r}).encode())
            good[(p, c, r)] = i
        else:
            make, expected = BAD_KINDS[kind]
            lines.append(make(p, c, r))
            expect_bad[i] = expected
    name = f"d{next(_counter)}"
    src = tmp / f"{name}.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    if not good:
        summary = ingest(src, name, db=db, max_chars=200)
        assert summary["added"] == 0 and summary["_exit"] == 1
    else:
        summary = ingest(src, name, db=db, max_chars=200)
        assert summary["_exit"] == 0
    with connect(db, read_only=True) as con:
        kept = pairs.get_pairs(con, name).to_pylist() if good else []
        q = pairs.get_quarantine(con, name, limit=10_000).to_dict(orient="records")
    assert {(k["prompt"], k["chosen"], k["rejected"]) for k in kept} == set(good)
    assert {qr["row_idx"]: (qr["field"], qr["reason"]) for qr in q} == expect_bad
    assert summary["rows_read"] == len(rows)
