"""`prefsift demo` as a new user runs it: the dashboard answers within seconds while the pipeline
runs beside it as a background job whose stages show on the Overview; the pages fill as the stages
land, and the job ends with every score in the database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "dashboard"))
from browser import CHROMIUM, chromium_page, free_port, settle, wait_healthy  # noqa: E402

from prefsift.storage import connect  # noqa: E402


def _demo_job(db: Path) -> dict | None:
    if not db.exists():
        return None
    try:
        with connect(db, read_only=True, timeout_s=5) as con:
            row = con.execute(
                "SELECT job_id, status, status_path, error FROM jobs WHERE kind = 'demo' ORDER BY created_at DESC"
            ).fetchone()
    except Exception:  # busy for a moment: a stage is committing
        return {"status": "busy"}
    return None if row is None else dict(zip(("job_id", "status", "status_path", "error"), row))


@pytest.mark.e2e
def test_demo_serves_first_and_runs_the_pipeline_as_a_background_job(tiny_model_dir, tmp_path):
    port = free_port()
    log_path = tmp_path / "demo.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefsift", "demo", "--model", str(tiny_model_dir), "--limit", "48"]
            + ["--max-length", "64", "--port", str(port)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "prefsift-demo.duckdb"
    job = None
    try:
        up_s = wait_healthy(url, proc, log_path, timeout_s=60)
        assert time.monotonic() - t0 < 60, "the dashboard must answer within 60 s"
        print(f"dashboard answered {up_s:.1f} s after `prefsift demo` started")
        if Path(CHROMIUM).exists():
            with chromium_page() as page:
                page.goto(url + "/")
                page.get_by_text("The demo pipeline").first.wait_for(timeout=120_000)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            job = _demo_job(db)
            if job and job["status"] in ("done", "failed", "killed"):
                break
            time.sleep(1)
        assert job and job["status"] == "done", (job, log_path.read_text()[-3000:])
        status = json.loads(Path(job["status_path"]).read_text())
        states = [s["state"] for s in status["pipeline"]]
        assert states and set(states) == {"done"}, status["pipeline"]
        with connect(db, read_only=True) as con:
            metrics = {r[0] for r in con.execute("SELECT DISTINCT metric FROM score_runs").fetchall()}
        assert {"irm", "lossdiff", "if", "tif"} <= metrics
        if Path(CHROMIUM).exists():
            with chromium_page() as page:
                page.goto(url + "/")
                settle(page, "Overview")
                page.get_by_text("The demo pipeline finished").first.wait_for(timeout=60_000)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if job and job.get("status") not in ("done", "failed", "killed"):
            subprocess.run(
                [sys.executable, "-m", "prefsift", "jobs", "cancel", job["job_id"], "--db", str(db)]
            )
