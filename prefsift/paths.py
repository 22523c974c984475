"""Where prefsift keeps files next to a database.

For `--db work/hh.duckdb` everything lives under `work/hh.prefsift/`:
  runs/<run_id>/      Parquet shards + status.json of a scoring/influence run (resumable)
  jobs/<job_id>/      log and status file of a background job
  models/<name>/      trained models (adapter + config + tokenizer)
  exports/            exports made from the dashboard (UI paths are confined here)
"""

from __future__ import annotations

import os
from pathlib import Path

from storage import resolve_db_path


def work_dir(db: str | os.PathLike | None) -> Path:
    p = resolve_db_path(db)
    return p.with_name(p.stem + ".prefsift")


def runs_dir(db) -> Path:
    return work_dir(db) / "runs"


def jobs_dir(db) -> Path:
    return work_dir(db) / "jobs"


def models_dir(db) -> Path:
    return work_dir(db) / "models"


def exports_dir(db) -> Path:
    return work_dir(db) / "exports"
