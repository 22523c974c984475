"""Diagnostics of a stored selection, all in SQL: what it keeps, and what kind of pairs it drops.

- kept count and fraction of its pool (the dataset split it was evaluated on);
- overlap coefficient with every other selection of the dataset, and with the TIF selection
  (stored `tif` flags, else the middle 10-90 band of `if`) when IF scores exist;
- per-score distributions of kept vs dropped pairs (quantiles, mean, missing);
- prompt/response length statistics kept vs dropped, in characters of text (message contents
  for conversational pairs): a rule that just keeps short answers shows up here;
- recall of injected label noise when `pairs.noise` is known: the share of noisy and of clean
  pairs that the selection drops (a good rule drops noisy pairs more often).
"""

from __future__ import annotations

import uuid

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from prefsift.storage.chance import CHANCE_KEYS, overlap_chance, p_at_least
from prefsift.storage.db import lit
from prefsift.storage.engine import evaluate_on, load
from prefsift.storage.runs import get_score_run_config, logp_runs_of
from prefsift.storage.selections import (
    MEMBERS_SQL,
    get_selection,
    list_selections,
    member_ids,
    members_relation,
    overlap,
    overlap_counts,
)

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def col(metric: str) -> str:
    """The pool column of a metric (prefixed: `if` is an SQL keyword)."""
    return f'"m_{metric}"'


def _text_len(column: str) -> str:
    # Conversational rows hold a JSON list of messages: measure the contents, not the JSON.
    return (
        f"CASE WHEN p.kind = 'conversational' THEN "
        f"list_sum(list_transform(json_extract_string(p.{column}, '$[*].content'), lambda x: length(x))) "
        f"ELSE length(p.{column}) END"
    )


def _pool_table(snap, runs: dict, split: str | None) -> pa.Table:
    """The engine's wide frame of the split as Arrow, m_<metric> columns, NaN as NULL."""
    return pa.Table.from_pandas(snap.wide(runs, split).rename(columns={m: f"m_{m}" for m in runs}))


def diagnose(
    con: duckdb.DuckDBPyConnection, name: str, tif_percentiles: tuple[float, float] = (10, 90)
) -> dict:
    """A dict of plain values and DataFrames describing selection `name`.

    The pool, joined once with the pairs (noise, text lengths) and the members, is
    materialised in a TEMP table (allowed on read-only connections too): every statistic
    below is then a scan of that table instead of a fresh VARCHAR join.
    """
    sel = get_selection(con, name)
    dataset, split = sel["dataset"], sel["split"]
    # The selection's own runs for the metrics it read, the latest for every other metric.
    snap, runs = load(con, dataset, sel["score_runs"] or None, (), split)
    pool_in = _pool_table(snap, runs, split)  # noqa: F841 - read by DuckDB by name
    tmp = f"_ps_diag_{uuid.uuid4().hex[:12]}"
    metric_cols = "".join(f", q.{col(m)}" for m in runs)
    con.execute(
        f"CREATE TEMP TABLE {tmp} AS SELECT q.pair_id{metric_cols}, m.pair_id IS NOT NULL AS _kept, p.noise, "
        f"{_text_len('prompt')} AS prompt_len, {_text_len('chosen')} AS chosen_len, "
        f"{_text_len('rejected')} AS rejected_len "
        f"FROM pool_in q JOIN pairs p ON p.dataset = {lit(dataset)} AND p.pair_id = q.pair_id "
        f"LEFT JOIN {members_relation(name)} m "
        "ON m.pair_id = q.pair_id"
    )
    try:
        return _diagnose(con, sel, snap, runs, tmp, tif_percentiles)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {tmp}")


def _diagnose(con, sel: dict, snap, runs: dict, tmp: str, tif_percentiles) -> dict:
    from prefsift.storage.rules import TIF_FLAG_RULE, Band

    name, dataset, split = sel["name"], sel["dataset"], sel["split"]
    n_pool, n_kept_pool = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE _kept) FROM {tmp}"
    ).fetchall()[0]
    out: dict = {
        "selection": name,
        "dataset": dataset,
        "split": split,
        "rule": sel["rule_text"],
        "resolved": sel["resolved"].get("thresholds", {}),
        "n_kept": int(sel["n_kept"]),
        "n_total": int(sel["n_total"]),
        "fraction": sel["fraction"],
        "n_pool_now": int(n_pool),
        "n_kept_in_pool_now": int(n_kept_pool),
        "n_missing": sel["resolved"].get("n_missing"),
        "forced_keep": sel["resolved"].get("forced_keep", 0),
        "forced_drop": sel["resolved"].get("forced_drop", 0),
    }

    # Overlap with the other selections of the dataset and with the TIF selection.
    others = list_selections(con, dataset)
    rows = [{"other": o, **overlap(con, name, o)} for o in others["name"] if o != name]
    out["overlaps"] = pd.DataFrame(rows, columns=["other", "n_a", "n_b", "n_both", "overlap", "jaccard"])
    tif_rule = None
    if "tif" in runs:
        tif_rule = TIF_FLAG_RULE
    elif "if" in runs:
        tif_rule = Band("if", *tif_percentiles)
    out["tif"] = None
    if tif_rule is not None:
        tif = evaluate_on(snap, tif_rule, runs, split, with_annotations=False)
        res = tif.result
        kept = snap.load_ids(("selection", name), member_ids(con, name)) & snap.split_mask(split)
        n_t, n_both = res.n_kept, int((tif.kept & kept).sum())
        n_kept_scored = int((kept & ~np.isnan(snap.load_run_values(runs[tif_rule.metric]))).sum())
        n_scored = res.n_total - res.n_truncated - res.n_missing
        # What a random selection of the same size (among the pairs with IF) would share with TIF.
        ch = overlap_chance(int(n_scored), int(n_kept_scored), int(n_t), int(n_both))
        out["tif"] = {
            "rule": tif_rule.to_text(),
            "run": runs.get(tif_rule.metric),
            "n_scored": n_scored,
            **overlap_counts(int(n_kept_pool), int(n_t), int(n_both)),
            **{k: ch[k] for k in CHANCE_KEYS},
        }

    # Per-score distributions, kept vs dropped (one scan for every metric).
    qs = "[" + ", ".join(repr(q) for q in QUANTILES) + "]"
    aggs = ", ".join(
        f"count(*) - count({col(m)}), avg({col(m)}), quantile_cont({col(m)}, {qs})" for m in runs
    )
    frames = []
    if runs:
        for row in con.execute(
            f"SELECT _kept, count(*), {aggs} FROM {tmp} GROUP BY _kept ORDER BY _kept DESC"
        ).fetchall():
            for i, m in enumerate(runs):
                missing, mean, qv = row[2 + 3 * i : 5 + 3 * i]
                frames.append(
                    {
                        "metric": m,
                        "group": "kept" if row[0] else "dropped",
                        "n": int(row[1]),
                        "missing": int(missing),
                        "mean": mean,
                        **{f"q{int(q * 100)}": v for q, v in zip(QUANTILES, qv or [None] * len(QUANTILES))},
                    }
                )
    out["scores"] = (
        pd.DataFrame(frames).sort_values(["metric", "group"], ascending=[True, False], ignore_index=True)
        if frames
        else pd.DataFrame()
    )

    # Lengths (characters), kept vs dropped.
    parts = [
        f"SELECT '{c[:-4]}' AS field, CASE WHEN _kept THEN 'kept' ELSE 'dropped' END AS grp, count(*) AS n, "
        f"avg({c}) AS mean, median({c}) AS median, quantile_cont({c}, 0.9) AS p90 FROM {tmp} GROUP BY ALL"
        for c in ("prompt_len", "chosen_len", "rejected_len")
    ]
    out["lengths"] = (
        con.execute(" UNION ALL ".join(parts) + " ORDER BY field, grp DESC")
        .df()
        .rename(columns={"grp": "group"})
    )

    # Label-noise recall.
    n_known, n_noisy, n_noisy_dropped, n_clean_dropped = con.execute(
        f"SELECT count(noise), count(*) FILTER (WHERE noise), count(*) FILTER (WHERE noise AND NOT _kept), "
        f"count(*) FILTER (WHERE noise = false AND NOT _kept) FROM {tmp}"
    ).fetchall()[0]
    out["noise"] = None
    if n_known:
        n_clean = n_known - n_noisy
        n_dropped = n_noisy_dropped + n_clean_dropped
        out["noise"] = {
            # Fisher's exact test: P(a random drop of the same size drops >= this many noisy pairs)
            "p_value": p_at_least(int(n_known), int(n_noisy), int(n_dropped), int(n_noisy_dropped)),
            "chance_dropped_share": n_dropped / n_known,
            "n_noisy": int(n_noisy),
            "n_clean": int(n_clean),
            "noisy_dropped": int(n_noisy_dropped),
            "clean_dropped": int(n_clean_dropped),
            "noisy_dropped_share": n_noisy_dropped / n_noisy if n_noisy else None,
            "clean_dropped_share": n_clean_dropped / n_clean if n_clean else None,
        }
    return out


# ---------------------------------------------------------------- arrays for the evidence
TOKEN_COLUMNS = ("prompt_tokens", "chosen_tokens", "rejected_tokens")


def token_logp_run(con: duckdb.DuckDBPyConnection, runs: dict) -> str | None:
    """A log-prob run behind the score runs (they share one tokenization): where token counts live."""
    found = logp_runs_of(con, runs)
    return found[0] if found else None


def policy_of(con: duckdb.DuckDBPyConnection, runs: dict) -> str | None:
    """The policy fingerprint the score runs were made with (the first run that records one)."""
    policies = ((get_score_run_config(con, r).get("models") or {}).get("policy") for r in runs.values())
    return next((p for p in policies if p), None)


def trained_pairs(con: duckdb.DuckDBPyConnection, dataset: str, model_id: str) -> list[str] | None:
    """The pairs of `dataset` a model was trained on, following its lineage back to the reference
    (warmup: the train split; fit-val: the val split; a run on a selection: its members). None
    when unknown: no training run recorded for a model on the way, or one trained on a file."""
    seen: set[str] = set()
    ids: set[str] = set()
    current, found = model_id, False
    while current and current not in seen:
        seen.add(current)
        row = con.execute(
            "SELECT kind, dataset, selection, base_model, config FROM training_runs "
            "WHERE output_model = ? AND status = 'done' ORDER BY finished_at DESC LIMIT 1",
            [current],
        ).fetchone()
        if row is None:
            break
        kind, ds, selection, base, _ = row
        found = True
        if ds == dataset:
            if selection:
                q, params = MEMBERS_SQL, [selection]
            elif kind in ("warmup", "fit-val"):
                split = "train" if kind == "warmup" else "val"
                q, params = "SELECT pair_id FROM pairs WHERE dataset = ? AND split = ?", [dataset, split]
            else:
                return None  # trained on a file: which pairs is not recorded
            ids.update(r[0] for r in con.execute(q, params).fetchall())
        current = base
    return sorted(ids) if found else None


def policy_eval(con: duckdb.DuckDBPyConnection, model_id: str | None) -> dict | None:
    """The newest evaluation of the policy (docs/METHOD.md: report θ's eval margin with every diagnostic)."""
    if not model_id:
        return None
    row = con.execute(
        "SELECT split, n_pairs, loss, reward_accuracy, mean_margin FROM evaluations WHERE model_id = ? "
        "ORDER BY created_at DESC LIMIT 1",
        [model_id],
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("split", "n_pairs", "loss", "reward_accuracy", "mean_margin"), row))


def evidence_frame(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    runs: dict | None = None,
    split: str | None = "train",
    selection: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """One row per pool pair: the metrics (NaN = missing), token counts, noise flag, `kept` (in
    `selection`) and `trained` (θ trained on it; NA when unknown), sorted by pair_id; and an info
    dict (runs, policy, its evaluation, the token run, how `trained` was found)."""
    snap, runs = load(con, dataset, runs, (), split)
    pool_in = _pool_table(snap, runs, split)  # noqa: F841 - read by DuckDB by name
    lp = token_logp_run(con, runs)
    policy = policy_of(con, runs)
    trained = trained_pairs(con, dataset, policy) if policy else None
    metric_cols = "".join(f', q.{col(m)}::DOUBLE AS "{m}"' for m in runs)
    tok_cols = "".join(f", l.{c}" for c in TOKEN_COLUMNS) if lp else ""
    tok_join = (
        f"LEFT JOIN (SELECT * FROM logps WHERE run_id = {lit(lp)}) l ON l.pair_id = q.pair_id" if lp else ""
    )
    kept = f", q.pair_id IN {members_relation(selection)} AS kept" if selection else ""
    df = con.execute(
        f"SELECT q.pair_id{metric_cols}{tok_cols}, p.noise{kept} FROM pool_in q "
        f"JOIN pairs p ON p.dataset = {lit(dataset)} AND p.pair_id = q.pair_id {tok_join} ORDER BY q.pair_id"
    ).df()
    df = df.astype({m: "float64" for m in runs})
    if trained is not None:
        df["trained"] = df["pair_id"].isin(set(trained))
    info = {
        "runs": dict(runs),
        "policy": policy,
        "policy_eval": policy_eval(con, policy),
        "token_run": lp,
        "trained_known": trained is not None,
    }
    return df, info
