"""Shared helpers of the reliability tests: the hypothesis budget and small databases.

Property tests run `examples(n)` cases each: `n` by default (a meaningful CI run that stays
well under a minute on a loaded 2-core machine), or $PREFSIFT_HYPOTHESIS_EXAMPLES each for the
full run recorded in docs/RELIABILITY.md (e.g. 250 x 5 property tests = 1,250 cases).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings


def examples(default: int) -> int:
    env = os.environ.get("PREFSIFT_HYPOTHESIS_EXAMPLES")
    return int(env) if env else default


def property_settings(default: int):
    """Settings of one property test: no deadline (the machine is shared), no database reuse."""
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,
        # Shrinking re-runs DuckDB ingests for minutes; the failing example is printed either way.
        phases=[p for p in Phase if p is not Phase.shrink or os.environ.get("PREFSIFT_HYPOTHESIS_SHRINK")],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def shm_dir():
    """A folder in RAM when there is one: each example opens DuckDB a few times, and a tmpfs
    saves the fsyncs (the behaviour under test does not depend on the file system)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="prefsift-rel-", dir=base) as d:
        yield Path(d)


def scored_synthetic_db(tmp_path: Path, n_pairs: int, name: str) -> tuple[Path, list[str]]:
    """`n_pairs` synthetic pairs ingested as dataset 'syn' into tmp_path/name, one IRM score run
    ('seed', value = row number); writes their ids to tmp_path/ids.json for subprocesses."""
    import json

    import pyarrow as pa

    from prefsift.ingest import ingest
    from prefsift.storage import connect, pairs
    from prefsift.storage import runs as runs_store

    src = tmp_path / "syn.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad {i}"})
            for i in range(n_pairs)
        )
    )
    db = tmp_path / name
    ingest(src, "syn", db=db)
    with connect(db) as con:
        ids = pairs.get_pairs(con, "syn", columns=("pair_id",)).column("pair_id").to_pylist()
        runs_store.save_score_run(
            con,
            "seed",
            "syn",
            "irm",
            {},
            pa.table({"pair_id": ids, "value": [float(i) for i in range(len(ids))]}),
        )
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    return db, ids
