"""`accelerate launch` with 2 CPU processes gives the same log-probs and scores as 1 process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prefsift.storage import connect, engine


@pytest.mark.e2e
def test_two_processes_equal_one(tiny_db, tiny_model_dir, tiny_model_dir_b, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate CLI not installed")
    one_db = tmp_path / "one.duckdb"
    shutil.copy(tiny_db, one_db)
    common = [
        "-m",
        "prefsift",
        "score",
        "--dataset",
        "tiny",
        "--ref",
        str(tiny_model_dir),
        "--policy",
        str(tiny_model_dir_b),
        "--val",
        str(tiny_model_dir_b),
        "--json",
    ]
    env = {**os.environ, "PREFSIFT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    # On CPUs, accelerate's torchrun launcher is the one that starts several processes
    # (`--cpu` starts one unless MPI is configured); prefsift then uses PartialState(cpu=True).
    two = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29533",
            *common,
            "--db",
            str(tiny_db),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, *common, "--db", str(one_db)], capture_output=True, text=True, env=env, timeout=600
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # both ranks computed a share of each log-prob run
    run_dirs = [d for d in (tiny_db.parent / "test.prefsift" / "runs").iterdir() if d.name.startswith("lp-")]
    assert len(run_dirs) == 2
    for d in run_dirs:
        assert {p.name[:10] for p in d.glob("shard-*.parquet")} == {"shard-r000", "shard-r001"}
    with connect(tiny_db, read_only=True) as con:
        a = engine.get_scores(con, "tiny").set_index("pair_id").sort_index()
    with connect(one_db, read_only=True) as con:
        b = engine.get_scores(con, "tiny").set_index("pair_id").sort_index()
    assert list(a.columns) == list(b.columns) and "lossdiff" in a.columns and len(a) == 6
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), atol=1e-5)
