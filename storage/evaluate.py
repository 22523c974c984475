"""Evaluating selection rules in DuckDB: resolve thresholds, count, list members, histograms.

See storage/rules.py for the rule semantics and storage/scorepool.py for the wide pool table
these queries scan. Query plan of one re-evaluation (what the dashboard does per slider move):
1. the pool: a fingerprint check of the cached wide table (integer work on `pairs`);
2. n, missing counts, whole-number percentile thresholds and histogram ranges come from the
   pool's percentile table; anything else (fractional percentiles, missing counts over two
   gappy metrics, an uncached pool) from ONE pass with every `quantile_cont` in it;
3. (top-k / random parts only) one ordered LIMIT query each, to find the k-th pair;
4. one grouped scan (kept x bin x bin) giving the kept count, forced counts and two
   histograms at once (`explore`); `evaluate` alone is a single count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from prefsift.storage.scorepool import Pool, arrow_table, col, get_pool, lit


@dataclass(frozen=True)
class RuleResult:
    """Counts of one evaluation, the thresholds it resolved to and the score runs it read."""

    n_kept: int
    n_total: int
    n_missing: int  # pairs lacking a score (none, NULL or NaN) that the rule reads
    resolved: dict  # rule part text -> its literal thresholds
    runs: dict  # metric -> score run id, the metrics the rule reads
    rule: str = ""
    split: str | None = "train"
    missing: dict = field(default_factory=dict)  # metric -> pairs lacking that score
    with_annotations: bool = True
    forced_keep: int = 0  # pool pairs annotated force=keep (kept whatever the rule says)
    forced_drop: int = 0
    cached: bool = False  # evaluated on the cached wide pool table

    @property
    def fraction(self) -> float:
        return self.n_kept / self.n_total if self.n_total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "fraction": self.fraction}


def _dbl(x: float) -> str:
    # A quoted cast keeps every bit: a bare 1.25 literal would be a DECIMAL in DuckDB.
    return (
        f"CAST('{x!r}' AS DOUBLE)" if math.isfinite(x) else f"CAST('{'inf' if x > 0 else '-inf'}' AS DOUBLE)"
    )


def _hash_expr(seed: int) -> str:
    return f"md5_number_lower(pair_id || ':{int(seed)}')"


@dataclass(frozen=True)
class _Prepared:
    pool: Pool
    flagged: str  # SQL: the pool with a boolean _kept column (and _force)
    result: RuleResult
    hist: dict  # metric -> (min, max) of its non-missing values
    has_force: bool = False  # the dataset has forced annotations (joined in `flagged`)


def _prepare(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rule,
    runs: Mapping[str, str] | None,
    split: str | None,
    with_annotations: bool,
    hist_metrics: Iterable[str] = (),
) -> _Prepared:
    from prefsift.storage import rules as R

    rule = R.coerce_rule(rule)
    used = rule.metrics()
    hist_metrics = list(dict.fromkeys(hist_metrics))
    pool = get_pool(con, dataset, runs, split, need=list(used) + hist_metrics)
    parts = R.leaves(rule)

    # 1. n, missing counts, band quantiles, histogram ranges: from the pool's percentile table
    #    where it has them, else in one pass over the pool.
    bands = [p for p in parts if isinstance(p, R.Band) and p.mode == "percentile"]
    st = pool.stats
    n_total, n_missing, missing = 0, 0, {}
    quantiles: dict = {}
    exprs: list[str] = []
    slots: list[tuple] = []  # what each selected expression fills in
    if st is None:
        exprs.append("count(*)")
        slots.append(("n",))
        exprs += [f"count(*) - count({col(m)})" for m in used]
        slots += [("missing", m) for m in used]
    else:
        n_total = st["n"]
        missing = {m: n_total - st["metrics"][m]["n"] for m in used}
    if st is None or sum(1 for m in used if missing[m]) > 1:
        # Pairs lacking any of the scores: a union, counted only when two metrics have gaps.
        exprs.append(
            "count(*) FILTER (WHERE " + " OR ".join(f"{col(m)} IS NULL" for m in used) + ")" if used else "0"
        )
        slots.append(("n_missing",))
    else:
        n_missing = sum(missing.values())
    for b in bands:
        lo, hi = pool.percentile(b.metric, b.lo), pool.percentile(b.metric, b.hi)
        if lo is False or hi is False:
            exprs.append(f"quantile_cont({col(b.metric)}, [{b.lo / 100!r}, {b.hi / 100!r}])")
            slots.append(("band", b))
        else:
            quantiles[b] = None if lo is None else (lo, hi)
    hist: dict = {}
    for m in hist_metrics:
        q = st["metrics"][m]["q"] if st is not None else False
        if q is False:
            exprs.append(f"[min({col(m)}), max({col(m)})]")
            slots.append(("hist", m))
        else:
            hist[m] = (None, None) if q is None else (q[0], q[100])
    if exprs:
        row = con.execute(f"SELECT {', '.join(exprs)} FROM {pool.relation}").fetchall()[0]
        for slot, v in zip(slots, row):
            if slot[0] == "n":
                n_total = int(v)
            elif slot[0] == "missing":
                missing[slot[1]] = int(v)
            elif slot[0] == "n_missing":
                n_missing = int(v)
            elif slot[0] == "band":
                quantiles[slot[1]] = v
            else:
                hist[slot[1]] = (v[0], v[1])
    n_total, n_missing = int(n_total), int(n_missing)
    missing = {m: int(missing[m]) for m in used}

    # 2. each part -> literal thresholds + an SQL predicate (NULL scores fail: coalesce false).
    resolved: dict[str, dict] = {}
    preds: list[str] = []
    for p in parts:
        info, pred = _resolve_part(con, pool, p, quantiles.get(p), n_total, R)
        resolved[p.to_text()] = info
        preds.append(f"coalesce({pred}, false)")
    rule_pred = " AND ".join(preds)

    # 3. annotations on top (only joined when the dataset has forced pairs).
    force_sql = "NULL::VARCHAR"
    join = ""
    if with_annotations:
        n_ann = con.execute(
            "SELECT count(*) FROM annotations WHERE dataset = ? AND force IN ('keep', 'drop')", [dataset]
        ).fetchone()[0]
        if n_ann:
            join = (
                " LEFT JOIN (SELECT pair_id, force FROM annotations WHERE dataset = "
                f"{lit(dataset)} AND force IN ('keep', 'drop')) a ON a.pair_id = p.pair_id"
            )
            force_sql = "a.force"
    kept = (
        f"CASE {force_sql} WHEN 'keep' THEN true WHEN 'drop' THEN false ELSE ({rule_pred}) END"
        if join
        else rule_pred
    )
    flagged = f"(SELECT p.*, {kept} AS _kept, {force_sql} AS _force FROM {pool.relation} p{join})"
    result = RuleResult(
        n_kept=-1,
        n_total=n_total,
        n_missing=n_missing,
        resolved=resolved,
        runs={m: pool.runs[m] for m in used},
        rule=rule.to_text(),
        split=split,
        missing=missing,
        with_annotations=with_annotations,
        cached=pool.cached,
    )
    return _Prepared(pool, flagged, result, hist, bool(join))


def _resolve_part(con, pool: Pool, p, q, n_total: int, R) -> tuple[dict, str]:
    if isinstance(p, R.Band):
        c = col(p.metric)
        if p.mode == "value":
            lo, hi = float(p.lo), float(p.hi)
            info = {"metric": p.metric, "mode": "value", "lo": lo, "hi": hi}
        else:
            lo, hi = (None, None) if q is None or q[0] is None else (float(q[0]), float(q[1]))
            info = {"metric": p.metric, "mode": "percentile", "p_lo": p.lo, "p_hi": p.hi, "lo": lo, "hi": hi}
        if lo is None:  # no scored pair in the pool: the band keeps nothing
            return info, "false"
        return info, f"({c} >= {_dbl(lo)} AND {c} <= {_dbl(hi)})"
    if isinstance(p, R.Top):
        c = col(p.metric)
        info = {"metric": p.metric, "k": p.k, "largest": p.largest}
        if p.k == 0:
            return {**info, "value": None}, "false"
        order = "DESC" if p.largest else "ASC"
        row = con.execute(
            f"SELECT {c}, pair_id FROM {pool.relation} WHERE {c} IS NOT NULL "
            f"ORDER BY {c} {order}, pair_id LIMIT 1 OFFSET {p.k - 1}"
        ).fetchone()
        if row is None:  # k >= number of scored pairs: every scored pair
            return {**info, "value": None, "all_scored": True}, f"({c} IS NOT NULL)"
        v, pid = float(row[0]), row[1]
        cmp = ">" if p.largest else "<"
        # Ties at the k-th value: the smaller pair_ids win, so exactly k pairs are kept.
        pred = f"({c} {cmp} {_dbl(v)} OR ({c} = {_dbl(v)} AND pair_id <= {lit(pid)}))"
        return {**info, "value": v, "last_pair_id": pid}, pred
    if isinstance(p, R.RandomFraction):
        m = math.floor(p.fraction * n_total + 0.5)
        info = {"fraction": p.fraction, "seed": p.seed, "n": m}
        if m == 0:
            return {**info, "hash": None}, "false"
        h = _hash_expr(p.seed)
        row = con.execute(
            f"SELECT {h} AS h, pair_id FROM {pool.relation} ORDER BY h, pair_id LIMIT 1 OFFSET {m - 1}"
        ).fetchone()
        hk, pid = int(row[0]), row[1]
        pred = f"({h} < {hk}::UBIGINT OR ({h} = {hk}::UBIGINT AND pair_id <= {lit(pid)}))"
        return {**info, "hash": str(hk), "last_pair_id": pid}, pred
    raise TypeError(f"not a rule part: {p!r}")


def _with_counts(r: RuleResult, kept: int, fk: int, fd: int) -> RuleResult:
    return RuleResult(**{**asdict(r), "n_kept": int(kept), "forced_keep": int(fk), "forced_drop": int(fd)})


def _count(con, prep: _Prepared) -> RuleResult:
    kept, fk, fd = con.execute(
        "SELECT count(*) FILTER (WHERE _kept), count(*) FILTER (WHERE _force = 'keep'), "
        f"count(*) FILTER (WHERE _force = 'drop') FROM {prep.flagged}"
    ).fetchone()
    return _with_counts(prep.result, kept, fk, fd)


HIST_COLUMNS = ["metric", "bin", "bin_lo", "bin_hi", "kept", "dropped"]


def _count_and_histograms(con, prep: _Prepared, bins: int) -> tuple[RuleResult, pd.DataFrame]:
    """The kept count and every histogram from grouped scans, two metrics per scan: group by
    (kept, [force,] bin 1, bin 2), at most 6 * (bins + 2)^2 groups.

    A bin is trunc((v - lo) / w) as SMALLINT (v >= lo, so trunc = floor, and cheaper), the
    maximum's bin `bins` folded into the last bin afterwards; force is grouped only when the
    dataset has forced annotations. Measured: ~25% faster than floor + least + an unused column.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    ranges = {m: r for m, r in prep.hist.items() if r[0] is not None}
    metrics = list(ranges)
    chunks = [metrics[i : i + 2] for i in range(0, len(metrics), 2)] or [[]]
    hist_counts: dict[str, np.ndarray] = {}  # metric -> (2, bins): dropped, kept per bin
    counts = None
    for chunk in chunks:
        exprs = ["_kept"] + (["_force"] if prep.has_force else [])
        for j, m in enumerate(chunk):
            lo, hi = ranges[m]
            w = (hi - lo) / bins
            b = f"({col(m)} * 0)" if w == 0 else f"trunc(({col(m)} - {_dbl(lo)}) / {_dbl(w)})"
            exprs.append(f"{b}::SMALLINT AS b{j}")
        df = con.execute(f"SELECT {', '.join(exprs)}, count(*) AS n FROM {prep.flagged} GROUP BY ALL").df()
        n = df["n"].to_numpy(dtype=np.int64)
        kept = df["_kept"].to_numpy(dtype=bool)
        if counts is None:
            force = df["_force"] if prep.has_force else pd.Series([None] * len(df), dtype=object)
            counts = (
                int(n[kept].sum()),
                int(n[(force == "keep").to_numpy()].sum()),
                int(n[(force == "drop").to_numpy()].sum()),
            )
        for j, m in enumerate(chunk):
            b = df[f"b{j}"]
            ok = b.notna().to_numpy()
            idx = np.minimum(b[ok].to_numpy(dtype=np.int64), bins - 1)
            h = np.zeros((2, bins), dtype=np.int64)
            np.add.at(h, (kept[ok].astype(np.int64), idx), n[ok])
            hist_counts[m] = h
    frames = []
    for m in metrics:
        lo, hi = ranges[m]
        nb = 1 if hi == lo else bins
        w = (hi - lo) / bins
        edges = [lo + i * w for i in range(nb)]
        h = hist_counts[m]
        frames.append(
            pd.DataFrame(
                {
                    "metric": m,
                    "bin": np.arange(nb, dtype=np.int64),
                    "bin_lo": edges,
                    "bin_hi": [*edges[1:], hi],
                    "kept": h[1, :nb],
                    "dropped": h[0, :nb],
                }
            )
        )
    hist = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in HIST_COLUMNS})
    hist = hist.astype({"kept": "int64", "dropped": "int64", "bin": "int64"})[HIST_COLUMNS]
    return _with_counts(prep.result, *counts), hist


def explore(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rule,
    metrics: Iterable[str] = (),
    bins: int = 50,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    with_annotations: bool = True,
) -> tuple[RuleResult, pd.DataFrame]:
    """`evaluate` and `histograms` in one go (one resolution): what a slider move needs."""
    prep = _prepare(con, dataset, rule, runs, split, with_annotations, metrics)
    return _count_and_histograms(con, prep, bins)


def evaluate(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rule,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    with_annotations: bool = True,
) -> RuleResult:
    """Counts only: how many pairs of the split the rule keeps, and how many lack a score."""
    return _count(con, _prepare(con, dataset, rule, runs, split, with_annotations))


def histograms(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rule,
    metrics: Iterable[str],
    bins: int = 50,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    with_annotations: bool = True,
) -> pd.DataFrame:
    """metric, bin, bin_lo, bin_hi, kept, dropped: `bins` equal bins over each metric's range
    in the pool (missing scores are not binned; see RuleResult.missing)."""
    prep = _prepare(con, dataset, rule, runs, split, with_annotations, metrics)
    return _count_and_histograms(con, prep, bins)[1]


def flagged_sql(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rule,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    with_annotations: bool = True,
) -> tuple[str, RuleResult]:
    """An SQL relation of the pool with a boolean `_kept` column, and the counted result."""
    prep = _prepare(con, dataset, rule, runs, split, with_annotations)
    return prep.flagged, _count(con, prep)


def members(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rule,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    with_annotations: bool = True,
) -> pa.Table:
    """The kept pair ids, sorted."""
    prep = _prepare(con, dataset, rule, runs, split, with_annotations)
    return arrow_table(con, f"SELECT pair_id FROM {prep.flagged} WHERE _kept ORDER BY pair_id")
