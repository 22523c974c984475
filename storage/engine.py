"""The selection engine: the one place where a rule (storage/rules.py) decides which pairs it keeps.

`prefsift select`, `prefsift calibrate`, diagnostics, the Tune page, Explore's bands and counts
and the Compare page's verdicts all call `evaluate_on`; exports write the members it saved. It
works on the dashboard's in-memory wide cache (`Snapshot`: one row per pair, one aligned float
array per score run), so a slider move costs milliseconds of numpy and the CLI evaluates the
same arrays in the same way.

Semantics (each one tested in tests/selection/test_rules.py and test_one_engine.py):
- The *pool* is the pairs of one split (None: every split), less the *fully truncated* pairs
  (no response token left under the tokenization of the runs the rule reads, or of the
  dataset's newest runs for a rule that reads none): TRL drops them, so no rule keeps them, a
  forced keep included, and a random draw is sized over the pool without them.
- `Band`: keep `lo <= score <= hi`, inclusive at both ends (every tie with a threshold is
  kept). Percentile thresholds are linear interpolations over the pool's non-missing scores
  (numpy's default = DuckDB's `quantile_cont`).
- `Top`: the k largest (smallest) scores; ties at the k-th value go to the smaller pair ids, so
  exactly min(k, n_scored) pairs are kept.
- `RandomFraction`: the round(fraction * n_pool) pairs with the smallest
  md5(pair_id || ':' || seed) (low 8 bytes, DuckDB `md5_number_lower`), ties by pair id:
  seeded, independent of row order, reproducible with hashlib. Tune's "random, same size"
  baseline is the same draw.
- `Intersect`: AND of its parts, each resolved over the whole pool.
- A missing score (no row, NULL or NaN) fails every rule on that score; such pairs are counted
  (`n_missing`, per metric in `missing`), never silently kept.
- Annotations (`force` = keep | drop) apply on top when `with_annotations`: drops leave,
  keeps join (within the pool).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import duckdb
import numpy as np
import pandas as pd

from prefsift.storage import rules as R
from prefsift.storage.annotations import forced as forced_annotations  # the dashboard reads it here
from prefsift.storage.errors import StorageError
from prefsift.storage.explore_snapshot import Snapshot
from prefsift.storage.pairs import SPLITS, require_dataset
from prefsift.storage.runs import resolve_runs


@dataclass(frozen=True)
class RuleResult:
    """Counts of one evaluation, the thresholds it resolved to and the score runs it read."""

    n_kept: int
    n_total: int  # pairs of the split
    n_missing: int  # pool pairs lacking a score the rule reads (none, NULL or NaN)
    resolved: dict  # rule part text -> its literal thresholds
    runs: dict  # metric -> score run id, the metrics the rule reads
    rule: str = ""
    split: str | None = "train"
    missing: dict = field(default_factory=dict)  # metric -> pool pairs lacking that score
    with_annotations: bool = True
    forced_keep: int = 0  # pool pairs annotated force=keep (kept whatever the rule says)
    forced_drop: int = 0
    n_truncated: int = 0  # pairs of the split left out as fully truncated

    @property
    def fraction(self) -> float:
        return self.n_kept / self.n_total if self.n_total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "fraction": self.fraction}


@dataclass(frozen=True)
class Evaluation:
    """A rule evaluated on a snapshot: the counts and the kept mask over the snapshot's pairs."""

    result: RuleResult
    kept: np.ndarray
    snap: Snapshot
    pool: np.ndarray  # the split less its fully truncated pairs: where a rule may keep

    def ids(self) -> list[str]:
        """The kept pair ids, sorted."""
        return sorted(self.snap.ids.take(np.flatnonzero(self.kept)).to_pylist())


def quantile(ordered: np.ndarray, pct: float) -> float:
    """The `pct` percentile of sorted values by linear interpolation at (n - 1) * pct / 100, as
    numpy's default and DuckDB's quantile_cont (O(1) on the cached sorted scores)."""
    rn = (len(ordered) - 1) * pct / 100
    lo, hi = math.floor(rn), math.ceil(rn)
    a, b = float(ordered[lo]), float(ordered[hi])
    return a if lo == hi else a + (rn - lo) * (b - a)


def band(
    v: np.ndarray, pool: np.ndarray, lo: float, hi: float, mode: str = "percentile", ordered=None
) -> tuple[float | None, float | None, np.ndarray]:
    """A band's thresholds and kept mask over the `pool` pairs of the values `v` (NaN = missing):
    percentiles of the pool's scored values (`ordered`: those values sorted, when the caller
    caches them) or values, inclusive at both ends; no scored pair -> (None, None, nothing)."""
    if mode == "percentile":
        if ordered is None:
            ordered = np.sort(v[pool & ~np.isnan(v)])
        if not len(ordered):
            return None, None, np.zeros(len(v), bool)
        lo, hi = quantile(ordered, lo), quantile(ordered, hi)
    with np.errstate(invalid="ignore"):
        return float(lo), float(hi), pool & (v >= lo) & (v <= hi)


def _band(
    snap: Snapshot, part: R.Band, v: np.ndarray, pool: np.ndarray, key: tuple
) -> tuple[dict, np.ndarray]:
    ordered = None
    if part.mode == "percentile":
        ordered = snap.derived(("sorted", *key), lambda: np.sort(v[pool & ~np.isnan(v)]))
    lo, hi, kept = band(v, pool, part.lo, part.hi, part.mode, ordered)
    pct = {"p_lo": part.lo, "p_hi": part.hi} if part.mode == "percentile" else {}
    return {"metric": part.metric, "mode": part.mode, **pct, "lo": lo, "hi": hi}, kept


def _top(snap: Snapshot, part: R.Top, v: np.ndarray, pool: np.ndarray) -> tuple[dict, np.ndarray]:
    info: dict = {"metric": part.metric, "k": part.k, "largest": part.largest}
    idx = np.flatnonzero(pool & ~np.isnan(v))
    kept = np.zeros(snap.n, bool)
    if part.k == 0:
        return {**info, "value": None}, kept
    if part.k >= len(idx):  # every scored pair
        kept[idx] = True
        return {**info, "value": None, "all_scored": True}, kept
    x = v[idx] if part.largest else -v[idx]
    kth = np.partition(x, len(x) - part.k)[len(x) - part.k]
    above, tie = idx[x > kth], idx[x == kth]
    # Ties at the k-th value: the smaller pair ids win, so exactly k pairs are kept.
    tie_ids = snap.ids.take(tie).to_pylist()
    order = sorted(range(len(tie)), key=tie_ids.__getitem__)[: part.k - len(above)]
    kept[above] = True
    kept[tie[order]] = True
    value = float(kth if part.largest else -kth)
    return {**info, "value": value, "last_pair_id": tie_ids[order[-1]]}, kept


def draw(snap: Snapshot, pool: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, int | None]:
    """The seeded random draw of `n` pool pairs (smallest md5(pair_id:seed)): a mask and the last hash."""
    order, hashes = snap.hash_order(seed)
    mine = order[pool[order]][:n]
    kept = np.zeros(snap.n, bool)
    kept[mine] = True
    return kept, (int(hashes[mine[-1]]) if n and len(mine) else None)


def _random(snap: Snapshot, part: R.RandomFraction, pool: np.ndarray) -> tuple[dict, np.ndarray]:
    m = math.floor(part.fraction * int(pool.sum()) + 0.5)
    kept, last = draw(snap, pool, m, part.seed)
    info = {"fraction": part.fraction, "seed": part.seed, "n": m, "hash": None if last is None else str(last)}
    return info, kept


def evaluate_on(
    snap: Snapshot,
    rule,
    runs: Mapping[str, str],
    split: str | None = "train",
    forced: Mapping[str, str] | None = None,
    with_annotations: bool = True,
) -> Evaluation:
    """Evaluate `rule` on a snapshot holding the runs (`Snapshot.load_run`) of `runs` (metric ->
    score run id). The truncated pairs are those of the runs the rule reads, or of every run in
    `runs` when it reads none. `forced`: pair id -> 'keep' | 'drop' (the annotations)."""
    rule = R.coerce_rule(rule)
    used = rule.metrics()
    absent = [m for m in used if m not in runs]
    if absent:
        raise StorageError(f"no score run given for {', '.join(absent)}")
    in_split = snap.split_mask(split)
    trunc_runs = tuple(sorted({runs[m] for m in used} or set(runs.values())))
    trunc = snap.truncated(trunc_runs) & in_split
    pool = in_split & ~trunc
    resolved, kept = {}, pool.copy()
    missing: dict[str, int] = {}
    lacking = np.zeros(snap.n, bool)
    for m in used:
        nan = np.isnan(snap.load_run_values(runs[m])) & pool
        missing[m] = int(nan.sum())
        lacking |= nan
    for p in R.leaves(rule):
        if isinstance(p, R.RandomFraction):
            info, k = _random(snap, p, pool)
        else:
            v = snap.load_run_values(runs[p.metric])
            key = (runs[p.metric], split, trunc_runs)
            info, k = _band(snap, p, v, pool, key) if isinstance(p, R.Band) else _top(snap, p, v, pool)
        resolved[p.to_text()] = info
        kept &= k
    fk = fd = 0
    if with_annotations and forced:
        for force in ("keep", "drop"):
            pos = snap.positions(snap.hash_ids([p for p, f in forced.items() if f == force]))
            pos = pos[pool[pos]]
            kept[pos] = force == "keep"
            fk, fd = (len(pos), fd) if force == "keep" else (fk, len(pos))
    result = RuleResult(
        n_kept=int(kept.sum()),
        n_total=int(in_split.sum()),
        n_missing=int(lacking.sum()),
        resolved=resolved,
        runs={m: runs[m] for m in used},
        rule=rule.to_text(),
        split=split,
        missing=missing,
        with_annotations=with_annotations,
        forced_keep=fk,
        forced_drop=fd,
        n_truncated=int(trunc.sum()),
    )
    return Evaluation(result, kept, snap, pool)


# ---------------------------------------------------------------- from a connection
def load(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    runs: Mapping[str, str] | None = None,
    need: tuple = (),
    split: str | None = "train",
    only_need: bool = False,
) -> tuple[Snapshot, dict[str, str]]:
    """A fresh snapshot of the dataset with its runs loaded: the dataset's newest run of every
    metric, overridden by `runs`, `need` required (NotFound with a hint otherwise); with
    `only_need`, just the runs of `need` (when it names any)."""
    require_dataset(con, dataset)
    if split is not None and split not in SPLITS:
        raise StorageError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    runs = resolve_runs(con, dataset, runs, need)
    if only_need and need:
        runs = {m: runs[m] for m in need}
    snap = Snapshot(con, dataset)
    for run_id in runs.values():
        snap.load_run(con, run_id)
    return snap, runs


def get_scores(
    con: duckdb.DuckDBPyConnection, dataset: str, runs: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """A wide frame: pair_id + one column per metric, in name order (default: the latest run of each
    metric among the runs of one policy and beta, `latest_score_runs`), one row per pair of the
    dataset that has a value in some run, by pair_id. The runs are checked and loaded as the
    selection engine loads them (`load`), and the pivot is `Snapshot.wide`'s."""
    snap, runs = load(con, dataset, runs, tuple(runs or ()), split=None, only_need=True)
    wide = snap.wide(dict(sorted(runs.items())))
    return wide[wide[sorted(runs)].notna().any(axis=1)].sort_values("pair_id", ignore_index=True)


def select(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rule,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    with_annotations: bool = True,
) -> Evaluation:
    """Evaluate a rule (text, dict or object) on the dataset's current scores."""
    rule = R.coerce_rule(rule)
    # A rule that reads no score (random) loads every run: its truncated pairs are theirs.
    snap, runs = load(con, dataset, runs, rule.metrics(), split, only_need=True)
    forced = forced_annotations(con, dataset) if with_annotations else None
    return evaluate_on(snap, rule, runs, split, forced, with_annotations)
