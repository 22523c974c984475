"""Training data: a split, a selection, or an exported parquet/jsonl file, in TRL's shape."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from prefsift.errors import UserError
from prefsift.train_data import load_rows


def test_split_rows_and_hash(split_db):
    rows, digest, dataset = load_rows(split_db, "tiny", "val", None, None)
    assert dataset == "tiny" and len(rows) == 4
    assert set(rows[0]) == {"prompt", "chosen", "rejected"} and isinstance(rows[0]["chosen"], str)
    again = load_rows(split_db, "tiny", "val", None, None)[1]
    other = load_rows(split_db, "tiny", "train", None, None)[1]
    assert digest == again != other


def test_file_rows(tmp_path):
    conv = [{"role": "user", "content": "hi"}]
    df = pd.DataFrame(
        {
            "prompt": [conv, conv],
            "chosen": [[{"role": "assistant", "content": "hello"}]] * 2,
            "rejected": [[{"role": "assistant", "content": "go"}]] * 2,
        }
    )
    pq = tmp_path / "sel.parquet"
    df.to_parquet(pq)
    rows, digest, dataset = load_rows(None, None, None, None, str(pq))
    assert dataset is None and len(rows) == 2 and rows[0]["prompt"][0]["content"] == "hi"
    jl = tmp_path / "sel.jsonl"
    jl.write_text("\n".join(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) for _ in range(3)))
    rows, digest2, _ = load_rows(None, None, None, None, str(jl))
    assert rows == [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 3 and digest2 != digest
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c"}))
    with pytest.raises(UserError, match="rejected"):
        load_rows(None, None, None, None, str(bad))
    with pytest.raises(UserError, match="not found"):
        load_rows(None, None, None, None, str(tmp_path / "missing.parquet"))


def test_selection_of_other_dataset_refused(split_db):
    from prefsift.storage import connect
    from prefsift.storage import selections as sstore

    with connect(split_db) as con:
        sstore.create_selection(con, "half", "tiny", rule="random:0.5:seed=0")
    rows, _, dataset = load_rows(split_db, None, None, "half", None)
    assert dataset == "tiny" and len(rows) == 4
    with pytest.raises(UserError, match="belongs to dataset"):
        load_rows(split_db, "other", None, "half", None)
