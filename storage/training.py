"""Training runs, their step metrics, evaluations, split records and the ledger.

A training job never holds the database: it calls these functions from short connections
(one per log event), so other processes can read `training_runs` / `training_metrics`
while it runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import duckdb
import pandas as pd

from prefsift.storage.chance import wilson
from prefsift.storage.pairs import require_dataset

RUN_STATUSES = ("running", "done", "failed")


# ---------------------------------------------------------------- split records
def get_dataset_config(con: duckdb.DuckDBPyConnection, dataset: str) -> dict:
    require_dataset(con, dataset)
    raw = con.execute("SELECT config FROM datasets WHERE name = ?", [dataset]).fetchone()[0]
    try:
        return dict(json.loads(raw or "{}"))
    except (TypeError, ValueError):
        return {}


def save_split_record(con: duckdb.DuckDBPyConnection, dataset: str, record: Mapping) -> None:
    """Keep how the splits were made under datasets.config["splits"] (other keys untouched)."""
    config = get_dataset_config(con, dataset)
    config["splits"] = dict(record)
    con.execute(
        "UPDATE datasets SET config = ? WHERE name = ?", [json.dumps(config, sort_keys=True), dataset]
    )


def get_split_record(con: duckdb.DuckDBPyConnection, dataset: str) -> dict | None:
    return get_dataset_config(con, dataset).get("splits")


# ---------------------------------------------------------------- training runs
def start_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    kind: str,
    dataset: str | None,
    selection: str | None,
    base_model: str | None,
    output_dir: str,
    config: Mapping,
) -> None:
    """Record a run as running (a rerun of the same run_id, i.e. a resume, resets it to running)."""
    con.execute(
        """
        INSERT INTO training_runs (run_id, kind, dataset, selection, base_model, output_dir, config, status)
        VALUES (?, ?, ?, ?, ?, ?, ?, 'running')
        ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished_at = NULL,
            output_dir = excluded.output_dir, config = excluded.config
        """,
        [
            run_id,
            kind,
            dataset,
            selection,
            base_model,
            output_dir,
            json.dumps(dict(config), sort_keys=True, default=str),
        ],
    )


def finish_run(
    con: duckdb.DuckDBPyConnection, run_id: str, status: str, output_model: str | None = None
) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
    con.execute(
        "UPDATE training_runs SET status = ?, output_model = coalesce(?, output_model), "
        "finished_at = current_timestamp WHERE run_id = ?",
        [status, output_model, run_id],
    )


def get_run(con: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    cur = con.execute("SELECT * FROM training_runs WHERE run_id = ?", [run_id])
    row = cur.fetchone()
    if row is None:
        return None
    out = dict(zip([d[0] for d in cur.description], row))
    out["config"] = json.loads(out["config"] or "{}")
    return out


def list_runs(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE t.dataset = ?", [dataset]) if dataset else ("", [])
    return con.execute(
        f"""
        SELECT t.run_id, t.kind, t.dataset, t.selection, t.status, m.name AS model,
               json_extract_string(t.config, '$.dtype') AS dtype,
               t.output_model, t.created_at, t.finished_at
        FROM training_runs t LEFT JOIN models m ON m.model_id = t.output_model
        {where} ORDER BY t.created_at
        """,
        params,
    ).df()


def count_trained(con: duckdb.DuckDBPyConnection, dataset: str) -> int:
    """Training runs on this dataset that finished or are under way (re-splitting would orphan them)."""
    return int(
        con.execute(
            "SELECT count(*) FROM training_runs WHERE dataset = ? AND status IN ('running', 'done')",
            [dataset],
        ).fetchone()[0]
    )


# ---------------------------------------------------------------- step metrics
def add_metrics(con: duckdb.DuckDBPyConnection, run_id: str, step: int, metrics: Mapping[str, float]) -> int:
    """Upsert one log event's numbers (a resumed run rewrites the steps it repeats)."""
    rows = [(run_id, int(step), str(k), float(v)) for k, v in metrics.items() if _is_number(v)]
    if rows:
        con.executemany(
            "INSERT INTO training_metrics (run_id, step, name, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (run_id, step, name) DO UPDATE SET value = excluded.value",
            rows,
        )
    return len(rows)


def get_metrics(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """A run's step metrics, one row per step and one column per metric name."""
    df = con.execute(
        "SELECT step, name, value FROM training_metrics WHERE run_id = ? ORDER BY step, name", [run_id]
    ).df()
    if df.empty:
        return df
    return df.pivot(index="step", columns="name", values="value").reset_index().rename_axis(None, axis=1)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v  # NaN != NaN


# ---------------------------------------------------------------- evaluations
def save_evaluation(
    con: duckdb.DuckDBPyConnection,
    model_id: str,
    dataset: str,
    split: str,
    n_pairs: int,
    loss: float,
    reward_accuracy: float,
    mean_margin: float,
    config: Mapping,
) -> None:
    con.execute(
        """
        INSERT INTO evaluations (model_id, dataset, split, n_pairs, loss, reward_accuracy, mean_margin, config)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (model_id, dataset, split) DO UPDATE SET n_pairs = excluded.n_pairs, loss = excluded.loss,
            reward_accuracy = excluded.reward_accuracy, mean_margin = excluded.mean_margin,
            config = excluded.config, created_at = now()
        """,
        [
            model_id,
            dataset,
            split,
            int(n_pairs),
            float(loss),
            float(reward_accuracy),
            float(mean_margin),
            json.dumps(dict(config), sort_keys=True, default=str),
        ],
    )


def get_evaluations(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE e.dataset = ?", [dataset]) if dataset else ("", [])
    return con.execute(
        f"""
        SELECT m.name AS model, m.role, e.dataset, e.split, e.n_pairs, e.loss, e.reward_accuracy,
               e.mean_margin, e.model_id, e.created_at
        FROM evaluations e LEFT JOIN models m USING (model_id) {where} ORDER BY e.created_at
        """,
        params,
    ).df()


def ledger(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """Every evaluated model of a dataset with how it was trained: selection rule, size, metrics.

    One row per (model, evaluated split); models that were not trained here (the reference)
    appear with empty training columns, so the baseline sits next to the selections.
    """
    df = con.execute(
        """
        WITH last_run AS (
            SELECT * FROM training_runs WHERE output_model IS NOT NULL AND status = 'done'
            QUALIFY row_number() OVER (PARTITION BY output_model ORDER BY finished_at DESC) = 1
        )
        SELECT m.name AS model, m.role, t.kind AS trained_by, t.selection,
               s.rule AS selection_rule, s.n_kept, s.n_total,
               e.split, e.n_pairs, e.loss, e.reward_accuracy, e.mean_margin,
               e.model_id, t.run_id, e.created_at
        FROM evaluations e
        LEFT JOIN models m USING (model_id)
        LEFT JOIN last_run t ON t.output_model = e.model_id
        LEFT JOIN selections s ON s.name = t.selection
        WHERE e.dataset = ?
        ORDER BY e.split, e.loss
        """,
        [dataset],
    ).df()
    # reward accuracy is a share of n_pairs held-out pairs: its 95% Wilson interval beside it
    ci = [
        wilson(a * n, int(n)) if a == a and n == n else (None, None)
        for a, n in zip(df["reward_accuracy"], df["n_pairs"])
    ]
    df.insert(df.columns.get_loc("reward_accuracy") + 1, "accuracy_lo", [c[0] for c in ci])
    df.insert(df.columns.get_loc("accuracy_lo") + 1, "accuracy_hi", [c[1] for c in ci])
    return df
