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
import pandas as pd

from storage.scorepool import col, get_pool, lit
from storage.selections import get_selection, list_selections, overlap, overlap_counts

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def _text_len(column: str) -> str:
    # Conversational rows hold a JSON list of messages: measure the contents, not the JSON.
    return (
        f"CASE WHEN p.kind = 'conversational' THEN "
        f"list_sum(list_transform(json_extract_string(p.{column}, '$[*].content'), lambda x: length(x))) "
        f"ELSE length(p.{column}) END"
    )


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
    pool = get_pool(con, dataset, sel["score_runs"] or None, split)
    tmp = f"_ps_diag_{uuid.uuid4().hex[:12]}"
    metric_cols = "".join(f", q.{col(m)}" for m in pool.runs)
    con.execute(
        f"CREATE TEMP TABLE {tmp} AS SELECT q.pair_id{metric_cols}, m.pair_id IS NOT NULL AS _kept, p.noise, "
        f"{_text_len('prompt')} AS prompt_len, {_text_len('chosen')} AS chosen_len, "
        f"{_text_len('rejected')} AS rejected_len "
        f"FROM {pool.relation} q JOIN pairs p ON p.dataset = {lit(dataset)} AND p.pair_id = q.pair_id "
        f"LEFT JOIN (SELECT pair_id FROM selection_members WHERE selection = {lit(name)}) m "
        "ON m.pair_id = q.pair_id"
    )
    try:
        return _diagnose(con, sel, pool, tmp, tif_percentiles)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {tmp}")


def _diagnose(con, sel: dict, pool, tmp: str, tif_percentiles) -> dict:
    from storage.evaluate import flagged_sql
    from storage.rules import TIF_FLAG_RULE, Band

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
    if "tif" in pool.runs:
        tif_rule = TIF_FLAG_RULE
    elif "if" in pool.runs:
        tif_rule = Band("if", *tif_percentiles)
    out["tif"] = None
    if tif_rule is not None:
        flagged, res = flagged_sql(con, dataset, tif_rule, pool.runs, split, with_annotations=False)
        n_t, n_both = con.execute(
            f"SELECT count(*) FILTER (WHERE f._kept), count(*) FILTER (WHERE f._kept AND d._kept) "
            f"FROM {flagged} f JOIN {tmp} d ON d.pair_id = f.pair_id"
        ).fetchall()[0]
        out["tif"] = {
            "rule": tif_rule.to_text(),
            "run": pool.runs.get(tif_rule.metric),
            "n_scored": res.n_total - res.n_missing,
            **overlap_counts(int(n_kept_pool), int(n_t), int(n_both)),
        }

    # Per-score distributions, kept vs dropped (one scan for every metric).
    qs = "[" + ", ".join(repr(q) for q in QUANTILES) + "]"
    aggs = ", ".join(
        f"count(*) - count({col(m)}), avg({col(m)}), quantile_cont({col(m)}, {qs})" for m in pool.runs
    )
    frames = []
    if pool.runs:
        for row in con.execute(
            f"SELECT _kept, count(*), {aggs} FROM {tmp} GROUP BY _kept ORDER BY _kept DESC"
        ).fetchall():
            for i, m in enumerate(pool.runs):
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
        out["noise"] = {
            "n_noisy": int(n_noisy),
            "n_clean": int(n_clean),
            "noisy_dropped": int(n_noisy_dropped),
            "clean_dropped": int(n_clean_dropped),
            "noisy_dropped_share": n_noisy_dropped / n_noisy if n_noisy else None,
            "clean_dropped_share": n_clean_dropped / n_clean if n_clean else None,
        }
    return out
