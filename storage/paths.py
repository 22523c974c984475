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

from prefsift.storage.db import resolve_db_path


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


def stored_path(db, path: str | os.PathLike) -> str:
    """How a local file path is recorded in the database: relative to the database's folder when
    it lies under it (the database and its work folder can move together, and the dashboard can
    serve them from any folder), else absolute. Hub ids and other non-paths are kept as they are."""
    p = Path(path)
    if not p.exists():
        return str(path)
    p = p.resolve()
    base = resolve_db_path(db).resolve().parent
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)


def resolve_stored_path(db, stored: str | None) -> str | None:
    """A path recorded in the database as one usable from the current folder (the reverse of
    `stored_path`). Relative paths are read against the database's folder; rows written by older
    versions hold paths relative to the folder that command ran in, so a path through a
    `<stem>.prefsift/` folder is rebased onto this database's work folder. Anything that does not
    exist either way (a hub id) comes back unchanged."""
    if not stored or Path(stored).is_absolute():
        return stored
    beside_db = resolve_db_path(db).resolve().parent / stored
    if beside_db.exists():
        return str(beside_db)
    parts = Path(stored).parts
    work = work_dir(db).resolve()
    if work.name in parts:
        rebased = work.joinpath(*parts[parts.index(work.name) + 1 :])
        if rebased.exists():
            return str(rebased)
    return stored
