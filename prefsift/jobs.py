"""Background jobs: run any `prefsift` subcommand detached, with a log and a status file.

`start_job` records the job and spawns a small supervisor in its own process session; the
supervisor runs `python -m prefsift <argv> --db DB` with $PREFSIFT_STATUS_FILE set (every
long command reports progress there through prefsift.progress), waits for it, and records
how it ended. The dashboard starts jobs with `prefsift jobs start -- …` and reads the jobs
table and status files; nothing holds the database while a job runs.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from prefsift.errors import UserError
from prefsift.progress import read_status, write_status
from prefsift.storage import connect, resolve_db_path
from prefsift.storage import jobs as jobs_store
from prefsift.storage.paths import jobs_dir


def start_job(db, argv: list[str]) -> dict:
    if not argv:
        raise UserError(
            "jobs start: give the subcommand to run, e.g. `prefsift jobs start -- score --dataset d ...`"
        )
    if argv[0] in ("jobs", "serve") or (argv[0] == "demo" and "--no-serve" not in argv):
        raise UserError(f"jobs start: `{' '.join(argv[:2])}` cannot run as a background job")
    db = str(resolve_db_path(db).resolve())
    job_id = time.strftime("%Y%m%d-%H%M%S") + f"-{argv[0]}-{secrets.token_hex(3)}"
    d = jobs_dir(db) / job_id
    d.mkdir(parents=True, exist_ok=True)
    log_path, status_path = d / "log.txt", d / "status.json"
    write_status(status_path, stage="queued", done=0, total=None)
    with connect(db) as con:
        jobs_store.create_job(con, job_id, argv[0], argv, str(log_path), str(status_path))
    with open(log_path, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "prefsift.jobs", db, job_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    return {"job_id": job_id, "log_path": str(log_path), "status_path": str(status_path)}


def supervise(db: str, job_id: str) -> int:
    with connect(db) as con:
        job = jobs_store.get_job(con, job_id)
    if job is None:
        raise UserError(f"no job {job_id}")
    argv = job["argv"]
    cmd = [sys.executable, "-m", "prefsift", argv[0], "--db", db, *argv[1:]]
    env = dict(
        os.environ, PREFSIFT_STATUS_FILE=job["status_path"], PREFSIFT_JOB_ID=job_id, PYTHONUNBUFFERED="1"
    )
    with open(job["log_path"], "ab") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        write_status(job["status_path"], stage="running", child_pid=child.pid)
        with connect(db) as con:
            jobs_store.set_running(con, job_id, child.pid)
        rc = child.wait()
    status = "done" if rc == 0 else ("killed" if rc < 0 else "failed")
    error = None if rc == 0 else _last_error_line(job["log_path"]) or f"exit code {rc}"
    write_status(job["status_path"], stage=status, exit_code=rc, finished=True)
    with connect(db) as con:
        jobs_store.finish_job(con, job_id, status, error)
    return rc


def _last_error_line(log_path: str) -> str | None:
    try:
        lines = Path(log_path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines[-50:]):
        if "error" in line.lower():
            return line.strip()[:500]
    return lines[-1].strip()[:500] if lines else None


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True


def job_view(job: dict) -> dict:
    """A job with its live status; a 'running' job whose process is gone shows as 'died'."""
    out = dict(job)
    out["progress"] = read_status(job["status_path"]) if job.get("status_path") else {}
    if out["status"] in ("running", "queued") and out.get("pid") and not pid_alive(out["pid"]):
        out["status"] = "died"
    return out


def cancel_job(db, job_id: str) -> dict:
    with connect(db, read_only=True) as con:
        job = jobs_store.get_job(con, job_id)
    if job is None:
        raise UserError(f"no job {job_id}")
    if job["status"] not in ("running", "queued") or not job.get("pid") or not pid_alive(job["pid"]):
        raise UserError(f"job {job_id} is not running (status {job['status']})")
    os.kill(int(job["pid"]), signal.SIGTERM)
    return {"job_id": job_id, "signalled": int(job["pid"])}


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1], sys.argv[2]))
