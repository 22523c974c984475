"""Deterministic, order-independent splits; user-given val pairs pinned; no silent re-split."""

from __future__ import annotations

import pyarrow as pa
import pytest

from prefsift.errors import UserError
from prefsift.splits import assign, make_splits, unit_hash
from prefsift.storage import connect
from prefsift.storage import pairs as pstore
from prefsift.storage import training as tstore


def _splits(db) -> dict:
    with connect(db) as con:
        t = pstore.get_pairs(con, "tiny", columns=("pair_id", "split"))
    return dict(zip(t.column("pair_id").to_pylist(), t.column("split").to_pylist()))


def test_assign_is_order_independent_and_seeded():
    ids = [f"p{i}" for i in range(2000)]
    a = dict(zip(ids, assign(ids, 0.1, 0.2, seed=0)))
    rev = list(reversed(ids))
    assert dict(zip(rev, assign(rev, 0.1, 0.2, seed=0))) == a
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "eval")}
    assert 150 < counts["val"] < 250 and 330 < counts["eval"] < 470
    assert assign(ids, 0.1, 0.2, seed=1) != list(a.values())
    assert 0.0 <= unit_hash("x", 0) < 1.0


def test_make_splits_recorded_and_stable(split_db):
    with connect(split_db) as con:  # start from the raw ingest: every pair train
        ids = list(_splits(split_db))
        pstore.assign_splits(con, "tiny", pa.table({"pair_id": ids, "split": ["train"] * len(ids)}))
    out = make_splits(split_db, "tiny", val_fraction=0.25, eval_fraction=0.25, seed=7)
    first = _splits(split_db)
    assert out["train"] + out["val"] + out["eval"] == 16 and out["pinned"] == 0
    assert first == dict(zip(sorted(first), assign(sorted(first), 0.25, 0.25, 7)))
    with connect(split_db) as con:
        rec = tstore.get_split_record(con, "tiny")
    assert rec["seed"] == 7 and rec["val_fraction"] == 0.25 and rec["counts"]["train"] == out["train"]
    again = make_splits(split_db, "tiny", val_fraction=0.25, eval_fraction=0.25, seed=7)
    assert again["moved"] == 0 and _splits(split_db) == first


def test_user_val_pairs_are_pinned(split_db):
    before = _splits(split_db)  # 8 train, 4 val, 4 eval given "by the user"
    out = make_splits(split_db, "tiny", seed=3)
    after = _splits(split_db)
    assert out["pinned"] == 8 and out["val_fraction"] == 0.0 and out["eval_fraction"] == 0.0
    assert {k: v for k, v in after.items() if v != "train"} == {
        k: v for k, v in before.items() if v != "train"
    }
    # another seed moves hash-assigned pairs only; the user's stay
    make_splits(split_db, "tiny", val_fraction=0.3, seed=4)
    final = _splits(split_db)
    assert all(final[k] == v for k, v in before.items() if v != "train")


def test_refuses_resplit_after_training_unless_forced(split_db):
    make_splits(split_db, "tiny", val_fraction=0.2, eval_fraction=0.2, seed=0)
    with connect(split_db) as con:
        tstore.start_run(con, "r1", "warmup", "tiny", None, "m", "/tmp/x", {})
    with pytest.raises(UserError, match="--force"):
        make_splits(split_db, "tiny", val_fraction=0.2, eval_fraction=0.2, seed=1)
    make_splits(split_db, "tiny", val_fraction=0.2, eval_fraction=0.2, seed=0)  # unchanged: fine
    out = make_splits(split_db, "tiny", val_fraction=0.2, eval_fraction=0.2, seed=1, force=True)
    assert out["seed"] == 1


def test_bad_fractions(split_db):
    with pytest.raises(UserError, match="val-fraction"):
        make_splits(split_db, "tiny", val_fraction=1.5, eval_fraction=0.0)
    with pytest.raises(UserError, match="leave training pairs"):
        make_splits(split_db, "tiny", val_fraction=0.6, eval_fraction=0.5)
