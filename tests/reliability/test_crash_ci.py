"""Crash safety in CI: `prefsift score`, `influence` and `warmup` SIGKILLed mid-run, resumed, and
compared with an uninterrupted run, on tiny models and 24 pairs (seconds each).

The long, randomised version (3+ kills at random times per job, `slow`) is test_crash.py and
`python benchmarks/crash.py`, with the same machinery (crashkit.py); this one kills at a fixed
point so that it never depends on timing: the job runs in its own process (forked from this one),
which SIGKILLs itself right after its k-th result shard (or checkpoint) is on disk, exactly as
`kill -9` from outside would leave it (no cleanup, no finally, no atexit runs). Each test then
checks that the kill happened mid-run (exit -9, some work on disk, nothing committed), that the
database opens read-only and whole, that the rerun computed ONLY what was missing, and that its
result equals the uninterrupted run's (scores within 1e-9 in float64, training metrics of every
step and the final adapter weights within 1e-6). The reference and the rerun run in this
process: torch is imported once, and no run pays for a fresh interpreter.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

import pytest

from tests.reliability import crashkit as crash

SHARD_PAIRS = 8  # score: 8 pairs a shard (64 in the product), so that a run has several shards
KILL_AT = {"score": 2, "influence": 2, "train": 1}  # the k-th shard / checkpoint written, then SIGKILL


def _arm(job: str, at: int) -> None:
    """In the killed process: wrap the writer of result shards (score, influence) or checkpoints
    (training) so that the process SIGKILLs itself right after the `at`-th one is on disk."""
    from transformers import Trainer

    import prefsift.influence
    import prefsift.score

    seen = [0]

    def count():
        seen[0] += 1
        if seen[0] >= at:
            os.kill(os.getpid(), signal.SIGKILL)

    if job == "score":
        inner_shard = prefsift.score.write_shard

        def write_shard(*a, **k):
            inner_shard(*a, **k)
            count()

        prefsift.score.write_shard = write_shard
    elif job == "influence":  # influence writes its shards through prefsift.shards.write_shard too
        inner_inf = prefsift.influence.write_shard

        def write_inf_shard(*a, **k):
            inner_inf(*a, **k)
            count()

        prefsift.influence.write_shard = write_inf_shard
    else:
        inner_save = Trainer._save_checkpoint

        def save(self, *a, **k):
            inner_save(self, *a, **k)
            count()

        Trainer._save_checkpoint = save


def _kill_mid_run(job: str, argv: list[str]) -> int:
    """Run the command in a forked process (torch is already imported: no new interpreter to pay
    for) that SIGKILLs itself mid-run. Returns the wait status."""
    from prefsift.cli import main

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            _arm(job, KILL_AT[job])
            code = int(main(argv) or 0)
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return crash.build_workspace(tmp_path_factory.mktemp("crash-ci") / "ws", n_pairs=24)  # 16 train


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (inherited by the killed process): on a shared, loaded 2-core machine two
    OpenMP threads spinning for each other made these runs 2-3x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def counted(monkeypatch):
    """Run the CLI in this process, counting the result rows (score, influence) it writes."""
    import prefsift.influence
    import prefsift.score
    from prefsift.cli import main

    monkeypatch.setenv("PREFSIFT_NO_PROGRESS", "1")
    monkeypatch.setattr(prefsift.score, "SHARD_PAIRS", SHARD_PAIRS)
    rows = [0]

    def counting(inner):
        def write_shard(run_dir, rank, table):
            inner(run_dir, rank, table)
            rows[0] += table.num_rows

        return write_shard

    # score and influence both write their result shards through prefsift.shards.write_shard
    monkeypatch.setattr(prefsift.score, "write_shard", counting(prefsift.score.write_shard))
    monkeypatch.setattr(prefsift.influence, "write_shard", counting(prefsift.influence.write_shard))
    from transformers import Trainer

    inner_train = Trainer.train

    def train(self, *a, **k):  # training: where it resumed from
        rows[0] = k.get("resume_from_checkpoint")
        return inner_train(self, *a, **k)

    monkeypatch.setattr(Trainer, "train", train)

    def run(argv: list[str]):
        """The rows written (score, influence) or the checkpoint resumed from (training)."""
        rows[0] = 0
        assert main(argv) == 0, argv
        return rows[0]

    return run


def _rows_on_disk(db: Path) -> int:
    import pyarrow.parquet as pq

    work = db.with_name(db.stem + ".prefsift") / "runs"
    return sum(pq.read_metadata(f).num_rows for f in work.glob("*/shard-*.parquet"))


@pytest.mark.parametrize("job", crash.JOBS)
def test_killed_mid_run_resumes_to_the_uninterrupted_result(workspace, tmp_path, counted, job):
    from prefsift.storage import connect

    # 1. the uninterrupted run
    ref_db = crash.fresh_copy(workspace, tmp_path / "reference")
    ref_rows = counted(crash.job_argv(job, workspace, ref_db))
    want = crash.results(job, ref_db)

    # 2. the same command on a fresh copy, SIGKILLed right after its k-th shard / checkpoint
    db = crash.fresh_copy(workspace, tmp_path / "killed")
    argv = crash.job_argv(job, workspace, db)
    status = _kill_mid_run(job, argv)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed: {status}"

    # 3. mid-run: some work is on disk, nothing of the job is committed, the database is whole
    c = crash.census(db)  # opens read-only
    assert c["pairs"] == workspace["n_pairs"] and c["pair_dupes"] == 0
    assert c["bad_score_runs"] == c["bad_logp_runs"] == c["metric_dupes"] == 0
    done_rows = _rows_on_disk(db)
    if job == "train":
        out = db.with_name(db.stem + ".prefsift") / "models" / "theta"
        assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
        with connect(db, read_only=True) as con:
            assert con.execute("SELECT status FROM training_runs").fetchall() == [("running",)]
            assert con.execute("SELECT count(*) FROM models WHERE name = 'theta'").fetchone()[0] == 0
    else:
        assert 0 < done_rows < ref_rows, (done_rows, ref_rows)
        assert c["score_runs"] == 0  # no score of the job committed

    # 4. the rerun computes only what was missing, and ends where the uninterrupted run did
    rows = counted(argv)
    if job == "train":
        assert ref_rows is None and Path(rows).name == "checkpoint-2", rows  # resumed, not restarted
    else:
        assert rows == ref_rows - done_rows, "the rerun recomputed work that was on disk"
    got = crash.results(job, db)
    cmp = crash.compare(job, got, want, workspace["n_train"])
    assert cmp["ok"], cmp
    if job == "train":
        assert cmp["metrics_compared"] > 0 and got["weights"]
