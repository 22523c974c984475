"""The score pool: one row per pair of a dataset split, one column per metric.

Why a cache: scores live in a long table `scores(run_id, pair_id, value)`. Pivoting two runs
onto the pairs of a split is two hash joins on a VARCHAR key: ~320 ms at 1M pairs on the
project's 2-core machine, paid by every query of every slider move (quantiles, count and two
histograms: ~1 s). So the pool is materialised once as a *wide* table
`_ps_pool_<key>(pair_id, split, m_<metric> ...)`, where key =
md5(dataset, metric -> run_id). NaN scores are stored as NULL (one notion of "missing").
A query on it is a columnar scan of two DOUBLE columns (< 10 ms for a count at 1M).

Percentile table: `quantile_cont` over 900k values costs ~30 ms per metric (3-10x that when
the machine is busy), and a band needs it at every re-evaluation. So the build also stores,
per split (and for all splits), the row count, each metric's non-missing count and its
`quantile_cont` at the 101 whole percentiles 0, 1, ..., 100, computed by DuckDB itself: a
band with whole-number percentiles (what a slider gives) reads its thresholds from there,
bit-identical to computing them again; any other percentile is computed on the fly.

Staleness: the table comment holds a fingerprint of what it was built from (which pairs are
in which split, and each run's id, row count and creation time: `save_score_run` replaces a
run by deleting and re-inserting it, which changes its created_at). Every use re-checks the
fingerprint (one scan of pairs' rowid and split, ~10 ms at 1M) and rebuilds a stale table.
It is derived data, not schema: dropping every `_ps_pool_*` table loses nothing
(`drop_caches`).

Read-only connections (the dashboard while a writer is away) cannot build the table; they
fall back to the same pool as a subquery (correct, slower). `refresh_cache` after saving
score runs keeps the fast path warm for them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pyarrow as pa

from prefsift.storage.errors import NotFound, StorageError
from prefsift.storage.pairs import SPLITS, require_dataset
from prefsift.storage.runs import latest_score_runs

log = logging.getLogger(__name__)

PREFIX = "_ps_pool_"
KEEP_PER_DATASET = 3  # older pool tables of a dataset are dropped when a new one is built


def lit(s: str) -> str:
    """A SQL string literal (DuckDB standard strings: only the quote needs doubling)."""
    return "'" + str(s).replace("'", "''") + "'"


def arrow_table(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pa.Table:
    """A query result as Arrow. `con.sql(...)` refuses while an earlier `fetchone()` result is
    unfinished (DuckDB 2), so go through execute() and silence its extra-copy warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
        return con.execute(sql, params or []).to_arrow_table()


def col(metric: str) -> str:
    """The pool column of a metric (prefixed: `if` is an SQL keyword)."""
    return f'"m_{metric}"'


@dataclass(frozen=True)
class Pool:
    """A FROM-able relation over one dataset split with pair_id, split and m_<metric> columns."""

    dataset: str
    split: str | None
    runs: dict = field(default_factory=dict)  # metric -> score run id, every column present
    relation: str = ""
    cached: bool = False
    # From the percentile table (cached pools only): {"n": rows, "metrics": {m: {"n": non-missing,
    # "q": [quantile_cont at 0, 1, ..., 100 percent] or None}}}.
    stats: dict | None = None

    def percentile(self, metric: str, p: float) -> float | None | bool:
        """The stored quantile_cont of a whole percentile; False when not stored."""
        if self.stats is None or not float(p).is_integer():
            return False
        q = self.stats["metrics"][metric]["q"]
        return None if q is None else q[int(p)]


def resolve_runs(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    runs: Mapping[str, str] | None = None,
    need: Iterable[str] = (),
) -> dict[str, str]:
    """The latest run of every metric of the dataset, overridden by `runs`; `need` must be there."""
    out = dict(latest_score_runs(con, dataset))
    if runs:
        known = {
            r: (d, m)
            for r, d, m in con.execute(
                "SELECT run_id, dataset, metric FROM score_runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                [list(runs.values())],
            ).fetchall()
        }
        for metric, run_id in runs.items():
            if run_id not in known:
                raise NotFound(f"no score run {run_id!r} (given for metric {metric!r})")
            if known[run_id][0] != dataset:
                raise StorageError(
                    f"score run {run_id!r} belongs to dataset {known[run_id][0]!r}, not {dataset!r}"
                )
            out[metric] = run_id
    missing = [m for m in need if m not in out]
    if missing:
        have = ", ".join(sorted(out)) or "none"
        raise NotFound(
            f"no score run for {', '.join(missing)} on dataset {dataset!r} (have: {have}); "
            "run `prefsift score` (or `prefsift influence` for if/tif) first. Runs of another policy "
            "or beta than the newest scoring are not mixed in by default: name the runs to use them"
        )
    return dict(sorted(out.items()))


def _key(dataset: str, runs: Mapping[str, str]) -> str:
    blob = json.dumps([dataset, sorted(runs.items())])
    return hashlib.md5(blob.encode()).hexdigest()[:16]


def fingerprint(con: duckdb.DuckDBPyConnection, dataset: str, runs: Mapping[str, str]) -> str:
    """What a pool table depends on: which pairs are in which split, and each run's identity.

    Pairs are identified by DuckDB rowid (an UPDATE of `split` keeps it, an insert gets a new
    one, larger than every existing one): count and max of the rowids pin the set of rows, a
    hash of (rowid, split) over the rows outside 'train' pins the split assignment. No hashing
    of the 90% train rows and no strings hashed: ~5x cheaper than hashing 32-character pair ids.
    """
    row = con.execute(
        "SELECT count(*), max(rowid), NULL FROM pairs WHERE dataset = $d UNION ALL "
        "SELECT count(*), max(rowid), coalesce(sum(hash(rowid, split)), 0)::VARCHAR FROM pairs "
        "WHERE dataset = $d AND split <> 'train'",
        {"d": dataset},
    ).fetchall()
    row = sorted(row, key=lambda r: r[2] is not None)  # UNION ALL order is not guaranteed
    rows = con.execute(
        "SELECT run_id, n_pairs, created_at::VARCHAR FROM score_runs WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY run_id",
        [list(runs.values())],
    ).fetchall()
    return json.dumps([[list(r) for r in row], rows])


def _subquery(dataset: str, runs: Mapping[str, str]) -> str:
    # One LEFT JOIN per run (measured at 1M: as fast as a pivot, and unsorted output halves the
    # build). NaN -> NULL: a NaN score is as missing as no score (NaN sorts above +inf in DuckDB).
    joins = " ".join(
        f"LEFT JOIN (SELECT pair_id, CASE WHEN isnan(value) THEN NULL ELSE value END AS v FROM scores "
        f"WHERE run_id = {lit(r)}) s{i} ON s{i}.pair_id = p.pair_id"
        for i, r in enumerate(runs.values())
    )
    cols = "".join(f", s{i}.v AS {col(m)}" for i, m in enumerate(runs))
    return f"SELECT p.pair_id, p.split{cols} FROM pairs p {joins} WHERE p.dataset = {lit(dataset)}"


def _is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return bool(row and row[0])


def _table_comment(con: duckdb.DuckDBPyConnection, table: str) -> dict | None:
    row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE table_name = ? AND database_name = current_database()",
        [table],
    ).fetchone()
    if row is None:
        return None
    try:
        return json.loads(row[0] or "{}")
    except ValueError:
        return {}


PERCENTS = [k / 100 for k in range(101)]


def _percentile_table(con: duckdb.DuckDBPyConnection, table: str, metrics: list[str]) -> dict:
    """Per split ('*' = all): row count, and per metric its count and 101 quantile_cont values."""
    exprs = []
    for m in metrics:
        exprs.append(f"count({col(m)})")
        exprs.append(f"quantile_cont({col(m)}, {PERCENTS!r})")
    sep = ", " if exprs else ""
    rows = con.execute(
        f"SELECT coalesce(split, '*'), count(*){sep}{', '.join(exprs)} FROM {table} "
        "GROUP BY GROUPING SETS ((split), ())"
    ).fetchall()
    out = {}
    for r in rows:
        out[r[0]] = {
            "n": int(r[1]),
            "metrics": {m: {"n": int(r[2 + 2 * i]), "q": r[3 + 2 * i]} for i, m in enumerate(metrics)},
        }
    return out


def _build(
    con: duckdb.DuckDBPyConnection, table: str, dataset: str, runs: Mapping[str, str], fp: str
) -> dict:
    t0 = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS {_subquery(dataset, runs)}")
        comment = {
            "dataset": dataset,
            "runs": dict(runs),
            "fingerprint": fp,
            "built_at": time.time(),
            "stats": _percentile_table(con, table, list(runs)),
        }
        con.execute(f"COMMENT ON TABLE {table} IS {lit(json.dumps(comment))}")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    log.info("built score pool %s for %s (%.2fs)", table, dataset, time.perf_counter() - t0)
    _evict(con, dataset, keep=table)
    return comment


def _pool_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, dict]]:
    rows = con.execute(
        "SELECT table_name, comment FROM duckdb_tables() "
        "WHERE starts_with(table_name, ?) AND database_name = current_database()",
        [PREFIX],
    ).fetchall()
    out = []
    for name, comment in rows:
        try:
            out.append((name, json.loads(comment or "{}")))
        except ValueError:
            out.append((name, {}))
    return out


def _evict(con: duckdb.DuckDBPyConnection, dataset: str, keep: str) -> None:
    mine = [
        (c.get("built_at", 0), n) for n, c in _pool_tables(con) if c.get("dataset") == dataset and n != keep
    ]
    for _, name in sorted(mine, reverse=True)[KEEP_PER_DATASET - 1 :]:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def drop_caches(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> int:
    """Drop the pool tables (of one dataset, or all). They are rebuilt on demand."""
    n = 0
    for name, c in _pool_tables(con):
        if dataset is None or c.get("dataset") == dataset:
            con.execute(f"DROP TABLE IF EXISTS {name}")
            n += 1
    return n


def get_pool(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    need: Iterable[str] = (),
    build: bool = True,
) -> Pool:
    """The pool of a dataset split (None: every split), from the cached wide table if fresh.

    A missing or stale table is (re)built when the connection can write and `build` is True;
    otherwise the pool is an equivalent subquery.
    """
    need = list(need)
    require_dataset(con, dataset)
    if split is not None and split not in SPLITS:
        raise StorageError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    runs = resolve_runs(con, dataset, runs, need)
    where = "" if split is None else f" WHERE split = {lit(split)}"
    table = PREFIX + _key(dataset, runs)
    fp = fingerprint(con, dataset, runs)
    comment = _table_comment(con, table)
    fresh = comment is not None and comment.get("fingerprint") == fp
    if not fresh and build and not _is_read_only(con):
        comment = _build(con, table, dataset, runs, fp)
        fresh = True
    if fresh:
        # A split with no pairs has no row in the percentile table.
        empty = {"n": 0, "metrics": {m: {"n": 0, "q": None} for m in runs}}
        stats = (comment.get("stats") or {}).get(split or "*", empty) if "stats" in comment else None
        return Pool(dataset, split, runs, f"(SELECT * FROM {table}{where})", True, stats)
    log.info("score pool of %s not cached (read-only connection): using a subquery", dataset)
    # Join only the runs the caller reads: each join is a VARCHAR hash join over every pair.
    if need:
        runs = {m: runs[m] for m in need}
    return Pool(dataset, split, runs, f"(SELECT * FROM ({_subquery(dataset, runs)}){where})", False)


def refresh_cache(
    con: duckdb.DuckDBPyConnection, dataset: str, runs: Mapping[str, str] | None = None
) -> Pool:
    """Build (or check) the wide table of a dataset's latest runs: call after saving score runs."""
    return get_pool(con, dataset, runs, split=None)


def pool_frame(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    metrics: Iterable[str],
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
) -> tuple[Pool, pd.DataFrame]:
    """pair_id + one float column per metric (missing scores as NaN), sorted by pair_id:
    for array work (calibration) that loads the pool once."""
    metrics = list(dict.fromkeys(metrics))
    pool = get_pool(con, dataset, runs, split, need=metrics)
    cols = ", ".join([f'{col(m)}::DOUBLE AS "{m}"' for m in metrics])
    sep = ", " if cols else ""
    df = con.execute(f"SELECT pair_id{sep}{cols} FROM {pool.relation} ORDER BY pair_id").df()
    return pool, df.astype({m: "float64" for m in metrics})
