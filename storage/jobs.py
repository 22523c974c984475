"""Background jobs: what was started, by whom, and how it ended."""

from __future__ import annotations

import json

import duckdb
import pandas as pd


def create_job(
    con: duckdb.DuckDBPyConnection, job_id: str, kind: str, argv: list[str], log_path: str, status_path: str
) -> None:
    con.execute(
        "INSERT INTO jobs (job_id, kind, argv, status, log_path, status_path) VALUES (?, ?, ?, 'queued', ?, ?)",
        [job_id, kind, json.dumps(argv), log_path, status_path],
    )


def set_running(con: duckdb.DuckDBPyConnection, job_id: str, pid: int) -> None:
    con.execute("UPDATE jobs SET status = 'running', pid = ? WHERE job_id = ?", [pid, job_id])


def finish_job(con: duckdb.DuckDBPyConnection, job_id: str, status: str, error: str | None = None) -> None:
    con.execute(
        "UPDATE jobs SET status = ?, error = ?, finished_at = current_timestamp WHERE job_id = ?",
        [status, error, job_id],
    )


def get_job(con: duckdb.DuckDBPyConnection, job_id: str) -> dict | None:
    df = con.execute("SELECT * FROM jobs WHERE job_id = ?", [job_id]).df()
    if df.empty:
        return None
    row = {k: (None if isinstance(v, float) and v != v else v) for k, v in df.iloc[0].to_dict().items()}
    row["argv"] = json.loads(row["argv"] or "[]")
    return row


def list_jobs(con: duckdb.DuckDBPyConnection, limit: int = 50) -> pd.DataFrame:
    return con.execute(
        "SELECT job_id, kind, argv, status, pid, log_path, status_path, error, created_at, finished_at "
        "FROM jobs ORDER BY created_at DESC LIMIT ?",
        [limit],
    ).df()
