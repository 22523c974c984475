"""`torchrun --nproc_per_node 2 -m prefsift influence` on CPU equals one process, and resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from prefsift.storage import connect, engine
from prefsift.storage.paths import runs_dir


def _if(db) -> np.ndarray:
    with connect(db, read_only=True) as con:
        return engine.get_scores(con, "tiny").set_index("pair_id").sort_index()["if"].to_numpy()


@pytest.mark.e2e
def test_two_processes_equal_one_and_resume(tiny_db, tiny_model_dir, tiny_model_dir_b, tmp_path):
    one_db = tmp_path / "one.duckdb"
    shutil.copy(tiny_db, one_db)
    common = [
        "-m", "prefsift", "influence", "--dataset", "tiny", "--policy", str(tiny_model_dir_b),
        "--ref", str(tiny_model_dir), "--dtype", "float64", "--batch-tokens", "64", "--json",
    ]  # fmt: skip
    env = {**os.environ, "PREFSIFT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29547",
    ]

    def two(db):
        proc = subprocess.run(
            [*torchrun, *common, "--db", str(db)], capture_output=True, text=True, env=env, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)  # rank 0 reports, the other rank prints nothing

    first = two(tiny_db)
    one = subprocess.run(
        [sys.executable, *common, "--db", str(one_db)], capture_output=True, text=True, env=env, timeout=600
    )
    assert one.returncode == 0, one.stderr[-3000:]
    single = json.loads(one.stdout)
    # g_val is the all-reduce of the ranks' parts: the same validation loss and the same IF (to
    # the float32 rounding that Llama's RMSNorm keeps even in a float64 model)
    assert first["val_loss"] == pytest.approx(single["val_loss"], rel=1e-6)
    a, b = _if(tiny_db), _if(one_db)
    assert len(a) == 6 and np.abs(b).min() > 0
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-6
    # each rank computed a slice of the pairs into its own shards
    folder = runs_dir(tiny_db) / first["run_id"]
    by_rank = {r: list(folder.glob(f"shard-r00{r}-*.parquet")) for r in (0, 1)}
    assert by_rank[0] and by_rank[1]
    # resume: rank 1's shards lost (a killed run), g_val cached; only the lost pairs are redone
    for f in by_rank[1]:
        f.unlink()
    again = two(tiny_db)
    assert again["gval_cached"] and again["run_id"] == first["run_id"]
    assert 0 < again["n_resumed_seqs"] < 12
    assert np.linalg.norm(_if(tiny_db) - b) / np.linalg.norm(b) < 1e-6
