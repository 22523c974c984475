"""A database seeded with synthetic pairs and scores (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from prefsift.storage import connect
from prefsift.storage.pairs import insert_pairs, upsert_dataset
from prefsift.storage.runs import save_score_run


def seed_db(
    path,
    n: int = 200,
    seed: int = 0,
    dataset: str = "syn",
    conversational: bool = False,
    nan_rows: int = 0,
    order=None,
    scores: dict | None = None,
) -> dict:
    """n pairs (every 10th in 'val'), noise on every 7th, irm/lossdiff/if scores (if given or
    random, correlated), `nan_rows` NaN irm values and as many pairs with no irm row."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:05d}" for i in range(n)]
    noise = np.array([i % 7 == 0 for i in range(n)])
    prompts = [f"question {i} " + "x" * int(rng.integers(0, 40)) for i in range(n)]
    chosen = [f"good answer {i} " + "y" * int(rng.integers(0, 80)) for i in range(n)]
    rejected = [f"bad answer {i} " + "z" * int(rng.integers(0, 80)) for i in range(n)]
    if conversational:
        prompts = [json.dumps([{"role": "user", "content": p}]) for p in prompts]
        chosen = [json.dumps([{"role": "assistant", "content": c}]) for c in chosen]
        rejected = [json.dumps([{"role": "assistant", "content": r}]) for r in rejected]
    idx = list(range(n)) if order is None else list(order)
    table = pa.table(
        {
            "pair_id": [ids[i] for i in idx],
            "row_idx": idx,
            "split": ["val" if i % 10 == 0 else "train" for i in idx],
            "kind": ["conversational" if conversational else "standard"] * n,
            "prompt": [prompts[i] for i in idx],
            "chosen": [chosen[i] for i in idx],
            "rejected": [rejected[i] for i in idx],
            "noise": [bool(noise[i]) for i in idx],
            "meta": ["{}"] * n,
        }
    )
    if scores is None:
        base = rng.normal(size=n)
        scores = {
            "irm": base + 0.5 * rng.normal(size=n) - 2.0 * noise,
            "lossdiff": base + 0.7 * rng.normal(size=n) - 1.5 * noise,
            "if": base + 0.3 * rng.normal(size=n) - 2.5 * noise,
        }
    scores = {k: np.asarray(v, dtype=float).copy() for k, v in scores.items()}
    keep_rows = {m: np.ones(n, bool) for m in scores}
    if nan_rows:
        scores["irm"][1 : 1 + nan_rows] = np.nan
        keep_rows["irm"][1 + nan_rows : 1 + 2 * nan_rows] = False
    with connect(path) as con:
        upsert_dataset(con, dataset, "synthetic", "conversational" if conversational else "standard")
        insert_pairs(con, dataset, table)
        for m, v in scores.items():
            sel = [i for i in idx if keep_rows[m][i]]
            save_score_run(
                con,
                f"{dataset}-{m}",
                dataset,
                m,
                {"metric": m, "model": "theta-fp"},
                pa.table({"pair_id": [ids[i] for i in sel], "value": [float(v[i]) for i in sel]}),
            )
    return {
        "ids": np.array(ids),
        "scores": scores,
        "noise": noise,
        "keep_rows": keep_rows,
        "split": np.array(["val" if i % 10 == 0 else "train" for i in range(n)]),
    }


@pytest.fixture()
def syn(db_path):
    info = seed_db(db_path)
    info["db"] = db_path
    return info
