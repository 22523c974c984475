"""Datasets, pairs, quarantine and splits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import duckdb
import pandas as pd
import pyarrow as pa

from prefsift.storage.errors import NotFound

PAIR_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("row_idx", pa.int64()),
        ("split", pa.string()),
        ("kind", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("noise", pa.bool_()),
        ("meta", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row_idx", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)

SPLITS = ("train", "val", "eval")


def upsert_dataset(
    con: duckdb.DuckDBPyConnection, name: str, source: str, fmt: str, config: dict | None = None
) -> None:
    con.execute(
        "INSERT INTO datasets (name, source, format, config) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO NOTHING",
        [name, source, fmt, json.dumps(config or {})],
    )


def insert_pairs(con: duckdb.DuckDBPyConnection, dataset: str, batch: pa.Table) -> int:
    """Insert a batch of pairs (PAIR_SCHEMA); existing (dataset, pair_id) are skipped.

    Returns the number of rows actually added.
    """
    if batch.num_rows == 0:
        return 0
    # Read by DuckDB by name (a replacement scan: unlike con.register it needs no cleanup and works
    # while an earlier fetchone() result is open on the connection).
    _pairs_in = batch.select(PAIR_SCHEMA.names).cast(PAIR_SCHEMA)  # noqa: F841
    before = count_pairs(con, dataset)
    # Duplicates inside one batch: keep the first occurrence.
    con.execute(
        """
        INSERT INTO pairs (dataset, pair_id, row_idx, split, kind, prompt, chosen, rejected, noise, meta)
        SELECT ?, pair_id, row_idx, split, kind, prompt, chosen, rejected, noise, meta
        FROM (SELECT *, row_number() OVER (PARTITION BY pair_id ORDER BY row_idx) AS _rn FROM _pairs_in)
        WHERE _rn = 1
        ON CONFLICT DO NOTHING
        """,
        [dataset],
    )
    return count_pairs(con, dataset) - before


def insert_quarantine(con: duckdb.DuckDBPyConnection, dataset: str, batch: pa.Table) -> int:
    if batch.num_rows == 0:
        return 0
    _q_in = batch.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)  # noqa: F841 - read by name
    con.execute(
        "INSERT INTO quarantine (dataset, source, row_idx, field, reason, detail, raw) "
        "SELECT ?, source, row_idx, field, reason, detail, raw FROM _q_in",
        [dataset],
    )
    return batch.num_rows


def clear_quarantine(con: duckdb.DuckDBPyConnection, dataset: str, source: str) -> None:
    """Re-ingesting a source replaces its quarantine rows (so counts stay those of the last run)."""
    con.execute("DELETE FROM quarantine WHERE dataset = ? AND source = ?", [dataset, source])


def require_dataset(con: duckdb.DuckDBPyConnection, dataset: str) -> None:
    """NotFound, naming the datasets there are, unless `dataset` is one."""
    # fetchall, not fetchone: an unfinished result makes a later con.sql() fail (DuckDB 2)
    if not con.execute("SELECT count(*) FROM datasets WHERE name = ?", [dataset]).fetchall()[0][0]:
        names = [r[0] for r in con.execute("SELECT name FROM datasets ORDER BY name").fetchall()]
        hint = f" (have: {', '.join(names)})" if names else " (none yet: run `prefsift ingest`)"
        raise NotFound(f"no dataset named {dataset!r}{hint}")


def list_datasets(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        """
        SELECT d.name, d.source, d.format,
               coalesce(p.n, 0) AS pairs,
               coalesce(p.n_train, 0) AS train, coalesce(p.n_val, 0) AS val, coalesce(p.n_eval, 0) AS eval,
               coalesce(p.n_noise, 0) AS noisy,
               coalesce(q.n, 0) AS quarantined, d.created_at
        FROM datasets d
        LEFT JOIN (SELECT dataset, count(*) n,
                          count(*) FILTER (WHERE split = 'train') n_train,
                          count(*) FILTER (WHERE split = 'val') n_val,
                          count(*) FILTER (WHERE split = 'eval') n_eval,
                          count(*) FILTER (WHERE noise) n_noise
                   FROM pairs GROUP BY dataset) p ON p.dataset = d.name
        LEFT JOIN (SELECT dataset, count(*) n FROM quarantine GROUP BY dataset) q ON q.dataset = d.name
        ORDER BY d.name
        """
    ).df()


def quarantine_summary(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE dataset = ?", [dataset]) if dataset else ("", [])
    return con.execute(
        f"SELECT dataset, reason, field, count(*) AS n FROM quarantine {where} GROUP BY ALL ORDER BY n DESC",
        params,
    ).df()


def get_quarantine(con: duckdb.DuckDBPyConnection, dataset: str | None, limit: int = 100) -> pd.DataFrame:
    """Quarantined rows of `dataset` by row number; of every dataset (with its name) when None."""
    cols = "source, row_idx, field, reason, detail, raw"
    if dataset is None:
        sql, params = f"SELECT dataset, {cols} FROM quarantine ORDER BY dataset, row_idx LIMIT ?", [limit]
    else:
        sql, params = (
            f"SELECT {cols} FROM quarantine WHERE dataset = ? ORDER BY row_idx LIMIT ?",
            [dataset, limit],
        )
    return con.execute(sql, params).df()


def get_pairs(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    split: str | Sequence[str] | None = None,
    pair_ids: Iterable[str] | None = None,
    columns: Sequence[str] = ("pair_id", "row_idx", "split", "kind", "prompt", "chosen", "rejected", "noise"),
) -> pa.Table:
    """Pairs of a dataset in a stable order (row_idx, pair_id)."""
    require_dataset(con, dataset)
    bad = [c for c in columns if c not in (*PAIR_SCHEMA.names, "dataset")]
    if bad:
        raise ValueError(f"unknown pair columns: {bad}")
    where, params = _in_splits(dataset, split)
    sql = f"SELECT {', '.join(columns)} FROM pairs {where}"
    if pair_ids is not None:
        sql += " AND pair_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(pair_ids))
    sql += " ORDER BY row_idx, pair_id"
    return con.sql(sql, params=params).to_arrow_table()


def get_pair(con: duckdb.DuckDBPyConnection, dataset: str, pair_id: str) -> dict | None:
    """One pair as a dict of the PAIR_SCHEMA columns, or None."""
    sql = f"SELECT {', '.join(PAIR_SCHEMA.names)} FROM pairs WHERE dataset = ? AND pair_id = ?"
    rows = con.execute(sql, [dataset, pair_id]).fetchall()  # all: no unfinished result left open
    return dict(zip(PAIR_SCHEMA.names, rows[0])) if rows else None


def count_pairs(con: duckdb.DuckDBPyConnection, dataset: str, split: str | None = None) -> int:
    sql = "SELECT count(*) FROM pairs WHERE dataset = ? AND (?::VARCHAR IS NULL OR split = ?)"
    return int(con.execute(sql, [dataset, split, split]).fetchall()[0][0])


def content_hash(
    con: duckdb.DuckDBPyConnection, dataset: str, split: str | Sequence[str] | None = None
) -> str:
    """A hash of which pairs (by content id) a dataset/split holds: the data part of every cache key."""
    where, params = _in_splits(dataset, split)
    sql = f"SELECT coalesce(md5(string_agg(pair_id, ',' ORDER BY pair_id)), '') FROM pairs {where}"
    return con.execute(sql, params).fetchall()[0][0]


def _in_splits(dataset: str, split: str | Sequence[str] | None) -> tuple[str, list]:
    """WHERE (with parameters) for a dataset's pairs of one split, of several, or of all (None)."""
    if split is None:
        return "WHERE dataset = ?", [dataset]
    return "WHERE dataset = ? AND split IN (SELECT unnest(?::VARCHAR[]))", [
        dataset,
        [split] if isinstance(split, str) else list(split),
    ]


def assign_splits(con: duckdb.DuckDBPyConnection, dataset: str, assignments: pa.Table) -> None:
    """Set pairs.split from a table (pair_id, split). Pairs not named keep their split."""
    _split_in = assignments.select(["pair_id", "split"])  # noqa: F841 - read by DuckDB by name
    con.execute(
        "UPDATE pairs SET split = s.split FROM _split_in s WHERE pairs.dataset = ? AND pairs.pair_id = s.pair_id",
        [dataset],
    )
