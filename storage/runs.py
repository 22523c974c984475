"""Models, log-prob runs, score runs and their diagnostics."""

from __future__ import annotations

import json
from collections.abc import Mapping

import duckdb
import pandas as pd
import pyarrow as pa

from prefsift.storage.db import transaction
from prefsift.storage.errors import NotFound, StorageError

LOGP_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("chosen_logp", pa.float64()),
        ("rejected_logp", pa.float64()),
        ("prompt_tokens", pa.int32()),
        ("chosen_tokens", pa.int32()),
        ("rejected_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)
SCORE_SCHEMA = pa.schema([("pair_id", pa.string()), ("value", pa.float64())])


# ---------------------------------------------------------------- models
def register_model(
    con: duckdb.DuckDBPyConnection,
    model_id: str,
    path: str,
    name: str | None = None,
    revision: str | None = None,
    adapter_path: str | None = None,
    weights_hash: str | None = None,
    role: str | None = None,
    lineage: Mapping | None = None,
) -> None:
    """Register a model by fingerprint. Re-registering (a scoring run naming a trained model, say)
    may give it a name; its role and lineage are kept once known (they are what `model_roles`
    reads: a θ_val scored as a policy stays θ_val, a θ keeps the dataset it was warmed up on)."""
    con.execute(
        """
        INSERT INTO models (model_id, name, path, revision, adapter_path, weights_hash, role, lineage)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (model_id) DO UPDATE SET
            name = coalesce(excluded.name, models.name),
            role = coalesce(models.role, excluded.role),
            lineage = CASE WHEN models.lineage IS NULL OR models.lineage::VARCHAR IN ('{}', 'null')
                           THEN excluded.lineage ELSE models.lineage END
        """,
        [
            model_id,
            name,
            path,
            revision,
            adapter_path,
            weights_hash,
            role,
            json.dumps(dict(lineage)) if lineage else None,
        ],
    )


_MODEL_COLS = "model_id name path revision adapter_path weights_hash role lineage created_at".split()


def _models(con: duckdb.DuckDBPyConnection, where_order: str, params: list | None = None) -> list[dict]:
    """Registered models as dicts (every column, lineage parsed), filtered and ordered by `where_order`."""
    rows = con.execute(f"SELECT {', '.join(_MODEL_COLS)} FROM models {where_order}", params or []).fetchall()
    return [{**dict(zip(_MODEL_COLS, r)), "lineage": json.loads(r[7] or "{}")} for r in rows]


def get_model(con: duckdb.DuckDBPyConnection, ref: str) -> dict:
    """A model by fingerprint, name (newest first) or path."""
    found = _models(
        con,
        "WHERE model_id = ? OR name = ? OR path = ? ORDER BY (model_id = ?) DESC, created_at DESC LIMIT 1",
        [ref, ref, ref, ref],
    )
    if not found:
        raise NotFound(f"no model registered as {ref!r}")
    return found[0]


def list_models(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        "SELECT model_id, name, role, path, adapter_path, created_at FROM models ORDER BY created_at"
    ).df()


def model_roles(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> dict:
    """The models of a dataset by role, from their lineage (never from a hard-coded name).

    policy θ: the newest model warmed up on `dataset` (role 'policy'; any dataset's if none);
    validation θ_val: the newest one trained from that θ; reference π_ref: the reference θ was
    trained against (else the newest registered reference); trained: models trained on the
    dataset's selections, oldest first. Each present role is a dict (`get_model`'s); absent ones
    are None ([] for trained)."""
    models = _models(con, "ORDER BY created_at")
    by_id = {m["model_id"]: m for m in models}

    def of(role: str, **lineage) -> list[dict]:
        """The models of `role` whose lineage has these values (a None value: any), oldest first."""
        return [
            m
            for m in models
            if m["role"] == role and all(v is None or m["lineage"].get(k) == v for k, v in lineage.items())
        ]

    def newest(role: str, **lineage) -> dict | None:
        return (of(role, **lineage) or [None])[-1]

    policy = newest("policy", dataset=dataset) or newest("policy")
    validation = (policy and newest("validation", parent=policy["model_id"])) or newest(
        "validation", dataset=dataset
    )
    reference = (policy and by_id.get(policy["lineage"].get("reference"))) or newest("reference")
    return {
        "reference": reference,
        "policy": policy,
        "validation": validation,
        "trained": of("trained", dataset=dataset),
    }


# ---------------------------------------------------------------- log-prob runs
def logp_run_exists(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM logp_runs WHERE run_id = ?", [run_id]).fetchall()[0][0])


def save_logp_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    model_id: str,
    dataset: str,
    config: Mapping,
    logps: pa.Table,
) -> None:
    """Store a finished log-prob run and its rows in one transaction (idempotent)."""
    run = {"run_id": run_id, "model_id": model_id, "dataset": dataset, "config": config, "status": "done"}
    _replace_run(con, "logp_runs", run, "logps", logps, LOGP_SCHEMA)


def _replace_run(con, runs_table: str, run: dict, rows_table: str, rows: pa.Table, schema: pa.Schema) -> None:
    """A run's row (its config as sorted JSON, n_pairs counted) and its rows (the schema's columns,
    in the table's order after run_id), replacing any earlier ones, in one transaction."""
    run = {**run, "config": json.dumps(dict(run["config"]), sort_keys=True), "n_pairs": rows.num_rows}
    _rows_in = rows.select(schema.names).cast(schema)  # read by DuckDB by name (a replacement scan)
    with transaction(con):
        con.execute(f"DELETE FROM {rows_table} WHERE run_id = ?", [run["run_id"]])
        con.execute(f"DELETE FROM {runs_table} WHERE run_id = ?", [run["run_id"]])
        con.execute(
            f"INSERT INTO {runs_table} ({', '.join(run)}) VALUES ({', '.join('?' * len(run))})",
            list(run.values()),
        )
        con.execute(
            f"INSERT INTO {rows_table} SELECT ?, {', '.join(_rows_in.column_names)} FROM _rows_in",
            [run["run_id"]],
        )


def get_logps(con: duckdb.DuckDBPyConnection, run_id: str) -> pa.Table:
    if not logp_run_exists(con, run_id):
        raise NotFound(f"no log-prob run {run_id!r}")
    return con.sql(
        "SELECT pair_id, chosen_logp, rejected_logp, prompt_tokens, chosen_tokens, rejected_tokens, truncated "
        "FROM logps WHERE run_id = ? ORDER BY pair_id",
        params=[run_id],
    ).to_arrow_table()


def scoring_logp_run(
    con: duckdb.DuckDBPyConnection, model_id: str, dataset: str, split: str | None
) -> tuple[str, dict] | None:
    """(run_id, config) of the newest log-prob run of a model over a dataset's split (or over the
    whole dataset), i.e. the run its scores were computed from; None if it was never scored."""
    row = con.execute(
        "SELECT run_id, config FROM logp_runs WHERE model_id = ? AND dataset = ? "
        "AND coalesce(json_extract_string(config, '$.split'), ?) = ? ORDER BY created_at DESC LIMIT 1",
        [model_id, dataset, split, split],
    ).fetchone()
    return None if row is None else (row[0], json.loads(row[1]) if isinstance(row[1], str) else row[1])


def fully_truncated_pairs(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> list[str]:
    """Pairs left with no response token on a side (the prompt filled max_length) in any of the
    log-prob runs, sorted. Their margin, loss and IF are 0 by construction, not by measurement,
    and TRL's DPOTrainer drops them: scores, bands and exports leave them out."""
    rows = con.execute(
        "SELECT DISTINCT pair_id FROM logps WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
        "AND (chosen_tokens = 0 OR rejected_tokens = 0) ORDER BY pair_id",
        [list(run_ids)],
    ).fetchall()
    return [r[0] for r in rows]


def list_logp_runs(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE r.dataset = ?", [dataset]) if dataset else ("", [])
    return con.execute(
        f"""
        SELECT r.run_id, r.dataset, m.name AS model, r.model_id, r.n_pairs,
               json_extract_string(r.config, '$.dtype') AS dtype, r.config, r.created_at
        FROM logp_runs r LEFT JOIN models m USING (model_id) {where} ORDER BY r.created_at
        """,
        params,
    ).df()


# ---------------------------------------------------------------- score runs
def score_run_exists(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM score_runs WHERE run_id = ?", [run_id]).fetchall()[0][0])


def get_score_run_config(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """The recorded config of a score run."""
    row = con.execute("SELECT config FROM score_runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise NotFound(f"no score run {run_id!r}")
    return json.loads(row[0] or "{}")


def logp_runs_of(con: duckdb.DuckDBPyConnection, score_runs: Mapping[str, str]) -> list[str]:
    """The log-prob runs behind score runs (`logp_runs` of IRM/LossDiff, `ref_run` of IF), in
    order of first mention: they share the tokenization the scores saw."""
    out: list[str] = []
    for run_id in score_runs.values():
        cfg = get_score_run_config(con, run_id)
        for rid in [*(cfg.get("logp_runs") or {}).values(), cfg.get("ref_run")]:
            if rid and rid not in out:
                out.append(rid)
    return out


def save_score_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    dataset: str,
    metric: str,
    config: Mapping,
    scores: pa.Table,
) -> None:
    """Store a finished score run (pair_id, value) in one transaction (idempotent)."""
    run = {"run_id": run_id, "dataset": dataset, "metric": metric, "config": config}
    _replace_run(con, "score_runs", run, "scores", scores, SCORE_SCHEMA)


def list_score_runs(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE s.dataset = ?", [dataset]) if dataset else ("", [])
    # dtype: the one the models computed in. Influence runs record their policy's; IRM and
    # LossDiff runs are functions of log-prob runs, which record theirs.
    return con.execute(
        f"""
        SELECT s.run_id, s.dataset, s.metric, s.n_pairs,
               coalesce(
                   json_extract_string(s.config, '$.policy.dtype'),
                   (SELECT string_agg(DISTINCT json_extract_string(l.config, '$.dtype'), ',')
                    FROM logp_runs l
                    WHERE l.run_id IN (json_extract_string(s.config, '$.logp_runs.ref'),
                                       json_extract_string(s.config, '$.logp_runs.policy'),
                                       json_extract_string(s.config, '$.logp_runs.val')))
               ) AS dtype,
               s.config, s.created_at
        FROM score_runs s {where} ORDER BY s.created_at
        """,
        params,
    ).df()


_RUN_MODEL = (
    "SELECT run_id, metric, created_at, json_extract_string(config, '$.models.policy') AS policy, "
    "TRY_CAST(json_extract_string(config, '$.beta') AS DOUBLE) AS beta FROM score_runs WHERE dataset = ?"
)


def score_run_anchor(
    con: duckdb.DuckDBPyConnection, dataset: str, policy: str | None = None, beta: float | None = None
) -> tuple[str | None, float | None]:
    """(policy fingerprint, beta) that default score runs must share: the given ones, completed
    from the newest run that records a policy (of that policy, when one is given). With no policy
    given, the dataset's warm-up policy θ (`model_roles`) when it has runs: a second model scored
    for comparison (the demo's θ_val) does not become the default of every page and rule."""
    if policy is not None and beta is not None:
        return policy, float(beta)
    if policy is None:
        theta = model_roles(con, dataset).get("policy")
        if theta is not None:
            n = con.execute(
                f"SELECT count(*) FROM ({_RUN_MODEL}) WHERE policy = ?", [dataset, theta["model_id"]]
            ).fetchone()[0]
            policy = theta["model_id"] if n else None
    row = con.execute(
        f"SELECT policy, beta FROM ({_RUN_MODEL}) WHERE policy IS NOT NULL "
        "AND (? IS NULL OR policy = ?) AND (? IS NULL OR beta = ?) ORDER BY created_at DESC LIMIT 1",
        [dataset, policy, policy, beta, beta],
    ).fetchone()
    if row is None:
        return policy, beta
    return row[0], (None if row[1] is None else float(row[1]))


def latest_score_runs(
    con: duckdb.DuckDBPyConnection, dataset: str, policy: str | None = None, beta: float | None = None
) -> dict[str, str]:
    """metric -> the newest score run of that metric on the dataset, all of one policy and beta.

    Mixing runs made from different policies (or betas) compares unrelated numbers: IF of θ_B with
    LossDiff of θ_A, or a LossDiff-IRM rule reading both. Score runs record the policy fingerprint
    (`config.models.policy`) and `beta`; the default (policy, beta) is that of the newest run that
    records a policy (`score_run_anchor`). Runs that record neither (older runs, imported scores)
    match any policy. A metric with no matching run is absent: pass run ids to use another one.
    """
    policy, beta = score_run_anchor(con, dataset, policy, beta)
    rows = con.execute(
        f"SELECT metric, arg_max(run_id, created_at) FROM ({_RUN_MODEL}) "
        "WHERE (policy IS NULL OR ? IS NULL OR policy = ?) AND (beta IS NULL OR ? IS NULL OR beta = ?) "
        "GROUP BY metric",
        [dataset, policy, policy, beta, beta],
    ).fetchall()
    return {m: r for m, r in rows}


def resolve_runs(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    runs: Mapping[str, str] | None = None,
    need=(),
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


def save_diagnostics(
    con: duckdb.DuckDBPyConnection, run_id: str, values: Mapping[str, float], detail: Mapping | None = None
) -> None:
    for name, value in values.items():
        con.execute(
            "INSERT INTO diagnostics (run_id, name, value, detail) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value, detail = excluded.detail",
            [run_id, name, None if value is None else float(value), json.dumps(dict(detail or {}))],
        )


def get_diagnostics(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
    return con.execute(
        f"SELECT run_id, name, value, detail FROM diagnostics {where} ORDER BY run_id, name", params
    ).df()
