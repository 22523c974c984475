"""Connections: short-lived, retried on lock conflicts, migrated on first write.

DuckDB lets one process hold a database file at a time (a writer excludes even readers
of other processes). So every caller opens a connection for one short unit of work and
closes it; `connect` retries a bounded number of times when another process holds the
file, then raises `DatabaseLocked` with a clear message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from prefsift.storage.errors import DatabaseLocked, SchemaTooNew, StorageError
from prefsift.storage.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

DEFAULT_DB = "prefsift.duckdb"
# "different configuration": in one process (the dashboard server), a read-only connection is open
# while another session opens a writer (or the reverse); it clears as soon as that one closes.
LOCK_MARKERS = (
    "Could not set lock",
    "Conflicting lock",
    "database is locked",
    "lock on file",
    "different configuration",
)


def resolve_db_path(path: str | os.PathLike | None = None) -> Path:
    """`--db` if given, else $PREFSIFT_DB, else ./prefsift.duckdb."""
    return Path(path or os.environ.get("PREFSIFT_DB") or DEFAULT_DB)


def _is_lock_error(exc: Exception) -> bool:
    msg = str(exc)
    return any(m in msg for m in LOCK_MARKERS)


def _open(path: Path, read_only: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_error(exc):
                raise StorageError(f"cannot open database {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise DatabaseLocked(
                    f"database {path} is busy: another prefsift process holds it "
                    f"(waited {timeout_s:.0f}s). Retry when that job commits, or use another --db."
                ) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0])


def _refuse_newer(con: duckdb.DuckDBPyConnection, path: Path | str) -> int:
    """The database's schema version; `SchemaTooNew` if a newer prefsift wrote it."""
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database {path} has schema version {current}, newer than this prefsift "
            f"understands ({SCHEMA_VERSION}). Upgrade prefsift to open it."
        )
    return current


def migrate(con: duckdb.DuckDBPyConnection, path: Path | str = "") -> int:
    """Apply the pending migrations, each in one transaction. Returns the version reached."""
    current = _refuse_newer(con, path)
    if current == 0:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "name VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)"
        )
    for version, name, sql in MIGRATIONS:
        if version <= current:
            continue
        with transaction(con):
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
        log.info("applied migration %d: %s", version, name)
    return SCHEMA_VERSION


def check_version(con: duckdb.DuckDBPyConnection, path: Path | str = "") -> None:
    current = _refuse_newer(con, path)
    if current < SCHEMA_VERSION:
        raise StorageError(
            f"database {path} is at schema version {current} (need {SCHEMA_VERSION}); "
            "open it once for writing (any prefsift command that writes) to migrate it."
        )


_MIGRATED: set[str] = set()


@contextlib.contextmanager
def connect(
    path: str | os.PathLike | None = None,
    read_only: bool = False,
    timeout_s: float | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection. Writers migrate the schema; a reader of an older schema migrates
    it first (one short write); readers refuse newer versions.

    A read-only open of a file that does not exist yet raises `StorageError` (nothing to read).
    """
    p = resolve_db_path(path)
    if timeout_s is None:
        timeout_s = float(os.environ.get("PREFSIFT_DB_TIMEOUT", "30"))
    if read_only and not p.exists():
        raise StorageError(f"no database at {p}: run `prefsift ingest` first (or pass --db)")
    if not read_only:
        p.parent.mkdir(parents=True, exist_ok=True)
    con = _open(p, read_only, timeout_s)
    if read_only and 0 < schema_version(con) < SCHEMA_VERSION:
        # An older database read by a newer prefsift: migrate it once (a short write), then read.
        con.close()
        with connect(p, timeout_s=timeout_s):
            pass
        con = _open(p, read_only, timeout_s)
    try:
        key = str(p.resolve())
        if read_only:
            check_version(con, p)
        elif key not in _MIGRATED:
            migrate(con, p)
            _MIGRATED.add(key)
        else:
            _refuse_newer(con, p)  # another process may have replaced the file with a newer one
        yield con
    finally:
        con.close()


def open_db(path: str | os.PathLike | None = None) -> Path:
    """Create (or migrate) the database and return its path."""
    p = resolve_db_path(path)
    with connect(p):
        pass
    return p


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def lit(s: str) -> str:
    """A SQL string literal (DuckDB standard strings: only the quote needs doubling)."""
    return "'" + str(s).replace("'", "''") + "'"


def arrow_table(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pa.Table:
    """A query result as Arrow. `con.sql(...)` refuses while an earlier `fetchone()` result is
    unfinished (DuckDB 2), so go through execute() and silence its extra-copy warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
        return con.execute(sql, params or []).to_arrow_table()
