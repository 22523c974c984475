"""Crash safety, reduced: SIGKILL `prefsift score`, `influence` and `warmup` at random points
(3 kills each by default, $PREFSIFT_CRASH_KILLS for more), resume, and compare with an
uninterrupted run. The machinery is crashkit.py; the full run (10+ kills each, results in
benchmarks/results/crash.md) is `python benchmarks/crash.py`, which drives the same crash_job.

Marked e2e and slow: each kill restarts a Python process that imports torch and transformers,
which takes 10-30 s on a loaded 2-core machine. Run with `./test.sh -m slow tests/reliability`.
CI runs the short variant, test_crash_ci.py (one kill at a fixed point per job, seconds each).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.reliability import crashkit as crash

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KILLS = int(os.environ.get("PREFSIFT_CRASH_KILLS", "3"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return crash.build_workspace(tmp_path_factory.mktemp("crash") / "ws", n_pairs=60)


@pytest.mark.parametrize("job", crash.JOBS)
def test_kill_and_resume_equals_uninterrupted(workspace, tmp_path, job):
    rep = crash.crash_job(
        job, workspace, tmp_path, kills=KILLS, seed=crash.JOBS.index(job), log=lambda *a: None
    )
    assert rep.kills >= KILLS
    assert rep.census_problems == []  # after every kill: opens read-only, no duplicate, no half run
    assert rep.resume_failures == []  # every rerun resumed
    assert rep.comparisons and all(c["ok"] for c in rep.comparisons), rep.comparisons


def test_train_killed_between_model_file_and_registration(tiny_db, tiny_model_dir):
    """The state a SIGKILL leaves after training but before registration: the weights are saved,
    the models row and prefsift_model.json (written last, after the commit) are not, and the run
    still says 'running'. The rerun a user would do must register the model and finish the run."""
    from prefsift.cli import main
    from prefsift.storage import connect

    argv = ["warmup", "--db", str(tiny_db), "--dataset", "tiny", "--model", str(tiny_model_dir),
            "--name", "theta", "--device", "cpu", "--max-length", "64"]  # fmt: skip
    assert main(argv) == 0
    with connect(tiny_db) as con:
        (model_id,) = con.execute("SELECT model_id FROM models WHERE name = 'theta'").fetchall()[0]
        con.execute("DELETE FROM models WHERE name = 'theta'")
        con.execute("UPDATE training_runs SET status = 'running', output_model = NULL, finished_at = NULL")
    model_file = (
        Path(str(tiny_db).replace(".duckdb", ".prefsift")) / "models" / "theta" / "prefsift_model.json"
    )
    assert json.loads(model_file.read_text())["model_id"] == model_id
    model_file.unlink()  # the kill came before the final, atomic write of this file
    assert main(argv) == 0  # the rerun a user would do
    with connect(tiny_db, read_only=True) as con:
        names = [r[0] for r in con.execute("SELECT name FROM models").fetchall()]
        status = [r[0] for r in con.execute("SELECT status FROM training_runs").fetchall()]
    assert "theta" in names and status == ["done"]


def test_train_resumes_past_a_half_written_checkpoint(tiny_db, tiny_model_dir):
    """The state a SIGKILL leaves while transformers writes a checkpoint: the folder exists,
    its files do not. A rerun must resume from the previous, whole checkpoint."""
    from transformers import TrainerCallback

    from prefsift.cli import build_parser, main
    from prefsift.config import config_from_args
    from prefsift.models import register_reference
    from prefsift.storage.paths import models_dir
    from prefsift.train import train

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise RuntimeError("simulated crash right after the first checkpoint")

    argv = ["warmup", "--db", str(tiny_db), "--dataset", "tiny", "--model", str(tiny_model_dir),
            "--name", "theta", "--device", "cpu", "--max-length", "64", "--batch-size", "2",
            "--set", "save_steps=1"]  # fmt: skip
    args = build_parser().parse_args(argv)
    ref = register_reference(args.db, args.model)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(args.db, config_from_args("warmup", args), ref, "theta", dataset="tiny", device="cpu",
              callbacks=[Crash()])  # fmt: skip
    out = models_dir(tiny_db) / "theta"
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert steps == [1]
    (out / "checkpoint-2").mkdir()  # the next save was killed after its mkdir
    assert main(argv) == 0


def test_train_killed_after_registration_registers_one_model(tiny_db, tiny_model_dir):
    """A kill after the model is registered but before prefsift_model.json is written: the rerun
    (a new process, so PEFT writes adapter_config.json's module list in another set order)
    must find the same fingerprint and leave ONE model, not two (seen in the long crash run)."""
    import subprocess

    from prefsift.storage import connect

    argv = [sys.executable, "-m", "prefsift", "warmup", "--db", str(tiny_db), "--dataset", "tiny",
            "--model", str(tiny_model_dir), "--name", "theta", "--device", "cpu", "--max-length", "64"]  # fmt: skip
    out = Path(str(tiny_db).replace(".duckdb", ".prefsift")) / "models" / "theta"

    def run(hash_seed: int) -> list[str]:
        env = dict(os.environ, PYTHONHASHSEED=str(hash_seed), PREFSIFT_NO_PROGRESS="1")
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads((out / "adapter_config.json").read_text())["target_modules"]

    first = run(1)
    orders = {tuple(first)}
    for seed in range(2, 8):  # rerun until a process writes the module list in another order
        with connect(tiny_db) as con:
            con.execute("UPDATE training_runs SET status = 'running', finished_at = NULL")
        (out / "prefsift_model.json").unlink()
        orders.add(tuple(run(seed)))
        if len(orders) > 1:
            break
    assert len(orders) > 1, "every process wrote target_modules in the same order: nothing tested"
    with connect(tiny_db, read_only=True) as con:
        models = con.execute("SELECT model_id FROM models WHERE name = 'theta'").fetchall()
        status = [r[0] for r in con.execute("SELECT status FROM training_runs").fetchall()]
    assert len(models) == 1, models
    assert status == ["done"]
