"""Read-only (and annotation) queries behind the dashboard's pages.

The interactive, whole-dataset queries (sample, bins, ranks, tuning) run on an in-memory
`Snapshot` (storage/explore_snapshot.py); what is here touches few rows of the database
file: listings, one page of text previews, one pair's neighbours, annotation and fates.
Every user value is a bound parameter; table names come from a whitelist.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from prefsift.storage import annotations as ann
from prefsift.storage.engine import draw, evaluate_on
from prefsift.storage.explore_snapshot import MAX_LIMIT, Filters, NotLoaded, Snapshot, page_limit  # noqa: F401
from prefsift.storage.rules import Band
from prefsift.storage.tokens import token_logps  # noqa: F401 (the dashboard reads it here)


def _json(text) -> dict:
    if isinstance(text, dict):
        return text
    try:
        out = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def policy_of(config, names: dict[str, str] | None = None) -> str | None:
    """The policy model a score run was computed under, as a registered name where possible.

    Understands the configs prefsift writes: `models.policy` (a fingerprint, from `prefsift
    score`), `policy` (a ModelSpec dict with a path, from `prefsift influence`, or a plain
    string), `policy_name`; `names` maps model ids and paths to registered names.
    """
    cfg = _json(config)
    names = names or {}
    cands = [cfg.get("policy_name"), cfg.get("policy_model_id")]
    models = cfg.get("models")
    if isinstance(models, dict):
        cands.append(models.get("policy"))
    pol = cfg.get("policy")
    if isinstance(pol, dict):
        # a LoRA θ shares its base path with π_ref: its adapter says which model it is
        cands += [pol.get("name"), pol.get("model_id"), pol.get("adapter"), pol.get("path")]
    else:
        cands.append(pol)
    cands += [cfg.get(k) for k in ("policy_model", "model", "theta", "policy_model_id")]
    for v in cands:
        if isinstance(v, str) and v:
            return names.get(v, v)
    return None


def score_runs(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """Score runs of a dataset, oldest first, with the policy model (`policy_of` its config: the
    registered name a model's id, adapter path or base path gives) and a short label for menus."""
    sql = "SELECT run_id, metric, n_pairs, config, created_at FROM score_runs WHERE dataset = ? ORDER BY created_at"
    df = con.execute(sql, [dataset]).df()
    names = {}
    for mid, path, adapter, name in con.execute(
        "SELECT model_id, path, adapter_path, name FROM models WHERE name IS NOT NULL ORDER BY created_at"
    ).fetchall():
        names[mid] = name
        if adapter:
            names[adapter] = name
        names.setdefault(path, name)
    df["policy"] = [policy_of(c, names) for c in df["config"]]
    # Menus show "metric · policy"; the run id is added only where that pair repeats.
    base = [f"{m} · {p or '?'}" for m, p in zip(df["metric"], df["policy"])]
    dup = {b for b in base if base.count(b) > 1}
    df["label"] = [f"{b} · {r[:8]}" if b in dup else b for b, r in zip(base, df["run_id"])]
    return df


_OVERVIEW_COLS = {  # the bookkeeping tables overview_table shows, and their columns
    "selections": "name, dataset, n_kept, n_total, round(100.0 * n_kept / nullif(n_total, 0), 1) AS kept_pct, "
    "rule, created_at",
    "exports": "export_id, selection, format, n_rows, path, created_at",
    "training_runs": "run_id, kind, dataset, selection, status, output_model, created_at, finished_at",
    "models": "name, role, model_id, path, adapter_path, created_at",
}


def overview_table(
    con: duckdb.DuckDBPyConnection, table: str, dataset: str | None = None, limit: int = 50
) -> pd.DataFrame:
    """The newest rows of a bookkeeping table (whitelisted), of one dataset where the table has one."""
    if table not in _OVERVIEW_COLS:
        raise ValueError(f"unknown table {table!r}")
    where, params = "", []
    if dataset and table in ("selections", "training_runs"):
        where, params = "WHERE dataset = ?", [dataset]
    elif dataset and table == "exports":
        where, params = "WHERE selection IN (SELECT name FROM selections WHERE dataset = ?)", [dataset]
    sql = f"SELECT {_OVERVIEW_COLS[table]} FROM {table} {where} ORDER BY created_at DESC LIMIT ?"
    return con.execute(sql, params + [page_limit(limit)]).df()


def previews(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    pair_ids: Sequence[str],
    chars: int = 160,
    rowids: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The first `chars` characters of prompt, chosen and rejected of a page of pairs (≤ 1000).

    With `rowids` (from a Snapshot of this database version) the rows are fetched by rowid
    (~20 ms instead of a ~500 ms scan at 1M pairs); rows whose id does not match are looked
    up by pair_id, so a stale rowid can never show another pair's text.
    """
    ids = list(pair_ids)[:MAX_LIMIT]
    n = max(8, min(int(chars), 4000))
    # conversational fields hold a JSON list of messages: preview their contents, not the JSON
    text = "left(CASE WHEN kind = 'conversational' THEN array_to_string(json_extract_string({c}, '$[*].content'), ' ¶ ') ELSE {c} END, ?) AS {c}"
    cols = "pair_id, " + ", ".join(text.format(c=c) for c in ("prompt", "chosen", "rejected"))
    got = pd.DataFrame(columns=["pair_id", "prompt", "chosen", "rejected"])
    if rowids is not None:
        got = con.execute(
            f"SELECT {cols} FROM pairs WHERE rowid = ANY(?::BIGINT[]) AND dataset = ?",
            [n, n, n, [int(r) for r in list(rowids)[:MAX_LIMIT]], dataset],
        ).df()
        got = got[got["pair_id"].isin(ids)]
    rest = [p for p in ids if p not in set(got["pair_id"])]
    if rest:
        more = con.execute(
            f"SELECT {cols} FROM pairs WHERE dataset = ? AND pair_id IN (SELECT unnest(?::VARCHAR[]))",
            [n, n, n, dataset, rest],
        ).df()
        got = pd.concat([got, more], ignore_index=True) if len(got) else more
    return got


def pair_fates(con: duckdb.DuckDBPyConnection, dataset: str, pair_id: str) -> pd.DataFrame:
    """What each saved selection of the dataset did with this pair: 'kept', 'dropped', or 'not in
    this selection's split' (a rule only ever considers the pairs of its split)."""
    return con.execute(
        """
        WITH s AS (
            SELECT *, coalesce(json_extract_string(resolved, '$.split'), 'train') AS sel_split
            FROM selections WHERE dataset = ?
        )
        SELECT s.name AS selection,
               CASE WHEN m.pair_id IS NOT NULL THEN 'kept'
                    WHEN s.sel_split NOT IN ('all', '*') AND p.split IS DISTINCT FROM s.sel_split
                        THEN 'not in this selection''s split (' || s.sel_split || ')'
                    ELSE 'dropped' END AS fate,
               m.pair_id IS NOT NULL AS kept, s.sel_split AS split, s.n_kept, s.n_total, s.created_at
        FROM s
        LEFT JOIN selection_members m ON m.selection = s.name AND m.pair_id = ?
        LEFT JOIN pairs p ON p.dataset = s.dataset AND p.pair_id = ?
        ORDER BY s.created_at DESC
        """,
        [dataset, pair_id, pair_id],
    ).df()


get_annotation = ann.effective_one  # the pair's effective decision (several annotators, one policy)


def neighbour_ids(
    con: duckdb.DuckDBPyConnection, dataset: str, pair_id: str | None
) -> tuple[str | None, str | None]:
    """The previous and next pair by row order (browsing one pair at a time). With no pair: the
    first pair that has a score (a pair too long to have any response token has none), else the
    first of the train split, else the first pair."""
    if pair_id is None:
        row = con.execute(
            """
            SELECT pair_id FROM pairs
            WHERE dataset = ?
            ORDER BY pair_id IN (SELECT s.pair_id FROM scores s JOIN score_runs r USING (run_id)
                                 WHERE r.dataset = ?) DESC,
                     split = 'train' DESC, row_idx, pair_id
            LIMIT 1
            """,
            [dataset, dataset],
        ).fetchone()
        return None, (row[0] if row else None)
    me = con.execute(
        "SELECT row_idx FROM pairs WHERE dataset = ? AND pair_id = ?", [dataset, pair_id]
    ).fetchone()
    if me is None:
        return None, None
    prev, nxt = (
        con.execute(
            f"SELECT pair_id FROM pairs WHERE dataset = ? AND (row_idx {op} ? OR (row_idx = ? AND pair_id {op} ?)) "
            f"ORDER BY row_idx {order}, pair_id {order} LIMIT 1",
            [dataset, me[0], me[0], pair_id],
        ).fetchone()
        for op, order in (("<", "DESC"), (">", "ASC"))
    )
    return (prev[0] if prev else None), (nxt[0] if nxt else None)


# ---------------------------------------------------------------- on a snapshot
def verdict_flips(
    snap: Snapshot,
    run_a: str,
    run_b: str,
    lo_pct: float = 10.0,
    hi_pct: float = 90.0,
    limit: int = 50,
    filters: Filters = Filters(),
) -> tuple[dict, pd.DataFrame]:
    """Each run's verdict on a pair is the engine's band `lo_pct-hi_pct` over the filter's split
    (what `prefsift select --rule 'METRIC:LO-HI'` keeps); compare two runs' verdicts on the
    pairs both scored."""
    if not 0 <= lo_pct < hi_pct <= 100:
        raise ValueError(f"need 0 <= lo_pct < hi_pct <= 100, got {lo_pct}, {hi_pct}")
    band = Band("score", lo_pct, hi_pct)
    keep = {
        k: evaluate_on(snap, band, {"score": r}, filters.split).kept
        for k, r in (("ka", run_a), ("kb", run_b))
    }
    t, where, params = snap.table([run_a, run_b], filters, ranks=[run_a, run_b], ids=True, masks=keep)
    cte = (
        "WITH k AS (SELECT pair_id, c0 AS a, c1 AS b, k0 AS rank_a, k1 AS rank_b, noise, ka AS keep_a, "
        f"kb AS keep_b FROM t WHERE {where} AND k0 IS NOT NULL AND k1 IS NOT NULL) "
    )
    row = snap.sql(
        t,
        cte
        + "SELECT count(*) FILTER (keep_a AND keep_b) AS both, count(*) FILTER (keep_a AND NOT keep_b) AS a_only, "
        "count(*) FILTER (keep_b AND NOT keep_a) AS b_only, count(*) FILTER (NOT keep_a AND NOT keep_b) AS neither, "
        "count(*) AS n FROM k",
        params,
    ).iloc[0]
    flips = snap.sql(
        t,
        cte + "SELECT * FROM k WHERE keep_a <> keep_b ORDER BY abs(rank_a - rank_b) DESC, pair_id LIMIT ?",
        params + [page_limit(limit)],
    )
    return {k: int(row[k]) for k in ("both", "a_only", "b_only", "neither", "n")}, flips


def tune(
    snap: Snapshot,
    rule: str,
    runs: dict[str, str],
    split: str | None = "train",
    forced: dict[str, str] | None = None,
    hist_bins: int = 40,
    compare: dict[str, np.ndarray] | None = None,
    random_seed: int = 0,
) -> dict:
    """The Tune page's numbers for a rule (text; metric -> run id in `runs`), evaluated by the
    engine (storage/engine.py) exactly as `prefsift select` would save it, annotations included.

    Returns the engine's result, counts, thresholds per rule part, kept-vs-dropped histograms
    per band's run, noise counts, overlaps with `compare` masks (name -> bool array), the kept
    mask, and the same numbers for the engine's seeded random draw of the same size (the
    baseline any rule should beat; `random:FRACTION:seed=N` draws in the same order)."""
    ev = evaluate_on(snap, rule, runs, split, forced)
    res, kept = ev.result, ev.kept
    pool = snap.split_mask(split)
    noise = snap.noise_mask()
    hists = []
    for run in dict.fromkeys(res.runs.values()):
        b, ok, edges = snap.bin_index(run, split, hist_bins)
        if not len(b):
            continue
        k_ok = kept[ok]
        k = np.bincount(b[k_ok], minlength=hist_bins)
        d = np.bincount(b[~k_ok], minlength=hist_bins)
        hists.append(
            pd.DataFrame({"run": run, "bin_lo": edges[:-1], "bin_hi": edges[1:], "kept": k, "dropped": d})
        )
    rand = draw(snap, ev.pool, res.n_kept, random_seed)[0]
    overlaps = {
        name: {"both": int((kept & m).sum()), "n": int((m & pool).sum()), "random": int((rand & m).sum())}
        for name, m in (compare or {}).items()
    }
    return {
        "result": res,
        "n_total": res.n_total,
        "n_kept": res.n_kept,
        "n_missing": res.n_missing,
        "n_truncated": res.n_truncated,
        "noisy": int((noise & pool).sum()),
        "kept_noisy": int((noise & kept).sum()),
        "thresholds": [(i.get("lo"), i.get("hi")) for i in res.resolved.values()],
        "hist": pd.concat(hists, ignore_index=True) if hists else pd.DataFrame(),
        "overlaps": overlaps,
        "kept_mask": kept,
        "random": {
            "n": int(rand.sum()),
            "noisy": int((rand & noise).sum()),
            "both": int((rand & kept).sum()),
        },
    }
