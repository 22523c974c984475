"""Background jobs: start, progress/status, failure recorded, lock refusal."""

from __future__ import annotations

import time

import pytest

from prefsift import jobs
from prefsift.errors import UserError
from prefsift.joblock import job_lock
from prefsift.storage import connect
from prefsift.storage import jobs as jobs_store
from tests.conftest import write_jsonl


def _wait(db, job_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with connect(db, read_only=True) as con:
            job = jobs_store.get_job(con, job_id)
        if job["status"] not in ("queued", "running"):
            return jobs.job_view(job)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.e2e
def test_job_runs_and_reports(tmp_path, db_path, tiny_pairs):
    src = write_jsonl(tmp_path / "a.jsonl", tiny_pairs)
    out = jobs.start_job(db_path, ["ingest", str(src), "--name", "bg"])
    done = _wait(db_path, out["job_id"])
    assert done["status"] == "done" and done["progress"]["stage"] == "done"
    assert done["progress"]["done"] == 8
    bad = jobs.start_job(db_path, ["ingest", str(tmp_path / "missing.jsonl"), "--name", "x"])
    failed = _wait(db_path, bad["job_id"])
    assert failed["status"] == "failed" and "no such file" in failed["error"]


def test_job_refuses_interactive_commands(db_path):
    with pytest.raises(UserError):
        jobs.start_job(db_path, ["serve"])
    with pytest.raises(UserError):
        jobs.start_job(db_path, [])


def test_job_lock_refuses_second_job(db_path):
    with job_lock(db_path, "first"):
        with pytest.raises(UserError, match="another prefsift job is running"):
            with job_lock(db_path, "second"):
                pass
    with job_lock(db_path, "third"):  # released when the first ended
        pass
