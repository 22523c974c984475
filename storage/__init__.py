"""prefsift storage: DuckDB schema, migrations and every SQL string of the project.

Depends on duckdb + pyarrow (+ pandas for DataFrames) only. No torch, no Streamlit.
"""

from prefsift.storage.db import DEFAULT_DB, connect, open_db, resolve_db_path
from prefsift.storage.errors import DatabaseLocked, SchemaTooNew, StorageError

__all__ = [
    "DEFAULT_DB",
    "DatabaseLocked",
    "SchemaTooNew",
    "StorageError",
    "connect",
    "open_db",
    "resolve_db_path",
]
