"""Fixtures of the training tests: a 16-pair database with train/val/eval splits."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_PAIRS, write_jsonl

# Small, fast DPO settings: every step is logged and checkpointed.
FAST = {"per_device_train_batch_size": 4, "max_length": 64, "save_steps": 1, "learning_rate": 5e-3}


def more_pairs() -> list[dict]:
    """TINY_PAIRS plus a variant of each (same words, other prompt), 16 distinct pairs."""
    out = [dict(p) for p in TINY_PAIRS]
    out += [{**p, "prompt": "please answer : " + p["prompt"]} for p in TINY_PAIRS]
    return out


@pytest.fixture()
def split_db(db_path, tmp_path):
    """16 pairs: 8 train, 4 val, 4 eval (assigned by row, recorded nowhere: a raw layout)."""
    import pyarrow as pa

    from prefsift.ingest import ingest
    from prefsift.storage import connect
    from prefsift.storage import pairs as pstore

    ingest(write_jsonl(tmp_path / "pairs.jsonl", more_pairs()), name="tiny", db=db_path)
    with connect(db_path) as con:
        ids = pstore.get_pairs(con, "tiny", columns=("pair_id",)).column("pair_id").to_pylist()
        splits = ["train"] * 8 + ["val"] * 4 + ["eval"] * 4
        pstore.assign_splits(con, "tiny", pa.table({"pair_id": ids, "split": splits}))
    return db_path
