"""Train / validation / evaluation splits, deterministic and recorded.

A pair's split depends only on (pair_id, seed): u = sha256("seed:pair_id") mapped to [0, 1);
u < eval_fraction -> 'eval', u < eval_fraction + val_fraction -> 'val', else 'train'. So the
split does not depend on row order or on which other pairs exist (adding data keeps the old
pairs where they were).

Pairs that the user ingested as 'val' or 'eval' (`prefsift ingest --split val`) are pinned:
the first `prefsift split` records them and every later split keeps them; the fractions then
default to 0 for a split the user supplied.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

import pyarrow as pa

from prefsift.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.1


def unit_hash(pair_id: str, seed: int) -> float:
    """A uniform number in [0, 1) from (seed, pair_id)."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(pair_ids: list[str], val_fraction: float, eval_fraction: float, seed: int) -> list[str]:
    us = (unit_hash(pid, seed) for pid in pair_ids)
    return [
        "eval" if u < eval_fraction else "val" if u < eval_fraction + val_fraction else "train" for u in us
    ]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{name} must be in [0, 1), got {value}")


def make_splits(
    db: str | os.PathLike | None,
    dataset: str,
    val_fraction: float | None = None,
    eval_fraction: float | None = None,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Assign and record the splits of a dataset. Returns a summary (counts per split)."""
    from prefsift.storage import connect
    from prefsift.storage import pairs as pairs_store
    from prefsift.storage import training as tstore
    from prefsift.storage.db import transaction

    with connect(db) as con:
        table = pairs_store.get_pairs(con, dataset, columns=("pair_id", "split"))
        record = tstore.get_split_record(con, dataset)
        current = dict(zip(table.column("pair_id").to_pylist(), table.column("split").to_pylist()))
        if not current:
            raise UserError(f"dataset {dataset!r} has no pairs")
        # 1. Pinned pairs: the user's own val/eval data, captured on the first split.
        if record is None:
            pinned = {pid: s for pid, s in current.items() if s in ("val", "eval")}
        else:
            pinned = {pid: s for pid, s in record.get("pinned", {}).items() if pid in current}
            # A val/eval file ingested after the last split: a val/eval pair that the last
            # split's hash rule does not explain was put there by the user.
            old = (record.get("val_fraction", 0.0), record.get("eval_fraction", 0.0), record.get("seed", 0))
            for pid, s in current.items():
                if s in ("val", "eval") and pid not in pinned and assign([pid], *old)[0] != s:
                    pinned[pid] = s
        has_val = any(s == "val" for s in pinned.values())
        has_eval = any(s == "eval" for s in pinned.values())
        vf = val_fraction if val_fraction is not None else (0.0 if has_val else DEFAULT_FRACTION)
        ef = eval_fraction if eval_fraction is not None else (0.0 if has_eval else DEFAULT_FRACTION)
        _check_fraction("--val-fraction", vf)
        _check_fraction("--eval-fraction", ef)
        if vf + ef >= 1.0:
            raise UserError(f"val + eval fractions must leave training pairs (got {vf} + {ef})")

        # 2. Hash-assign the rest.
        free = sorted(pid for pid in current if pid not in pinned)
        new = dict(zip(free, assign(free, vf, ef, seed)))
        new.update(pinned)
        changed = sum(1 for pid, s in new.items() if current[pid] != s)

        # 3. Re-splitting after training would orphan the trained models' lineage.
        trained = tstore.count_trained(con, dataset)
        if changed and trained and not force:
            raise UserError(
                f"dataset {dataset!r} already has {trained} training run(s) on its current splits; "
                f"re-splitting would move {changed} pair(s). Pass --force to re-split anyway."
            )
        counts = {s: sum(1 for v in new.values() if v == s) for s in pairs_store.SPLITS}
        if counts["train"] == 0:
            raise UserError("the split leaves no training pairs")
        rec = {
            "method": "sha256(seed:pair_id)",
            "seed": seed,
            "val_fraction": vf,
            "eval_fraction": ef,
            "pinned": pinned,
            "counts": counts,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with transaction(con):
            if changed:
                pairs_store.assign_splits(
                    con, dataset, pa.table({"pair_id": list(new), "split": list(new.values())})
                )
            tstore.save_split_record(con, dataset, rec)
    log.info("split %s: %s (%d moved)", dataset, counts, changed)
    return {
        "dataset": dataset,
        "seed": seed,
        "val_fraction": vf,
        "eval_fraction": ef,
        "pinned": len(pinned),
        "moved": changed,
        **counts,
    }
