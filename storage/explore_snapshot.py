"""The one wide-score cache: a dataset's pairs and score runs in memory, aligned by position.

Why: scores live in a long table keyed by a VARCHAR pair id, so putting two runs side by side
is a string hash join (~300 ms per run at 1M pairs on a 2-core machine). `Snapshot` pays it once
per (database version, dataset): it reads the pairs' small columns and, lazily, each score run
aligned to them by a 64-bit hash of the pair id (`ORDER BY h`, then a sorted search), with the
pairs that run's tokenization fully truncated. The selection engine (storage/engine.py)
evaluates rules on these arrays, for the CLI (a fresh snapshot per command) and the dashboard
(one per database version); the dashboard's other interactions are DuckDB SQL over the same
in-memory Arrow columns (a columnar scan: tens of ms at 1M). Pair texts stay in the database.

Identifiers never come from the UI: score columns are positional (c0, c1, ...), values are
bound parameters, and run ids are only ever bound values.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from prefsift.storage.db import arrow_table
from prefsift.storage.pairs import SPLITS
from prefsift.storage.runs import fully_truncated_pairs, logp_runs_of

MAX_LIMIT = 1000  # the most rows a page may ask for: never more rows than a page shows


@dataclass(frozen=True)
class Filters:
    """What narrows the pairs of a dataset; every field becomes a bound parameter or a mask.

    ranges: (run_id, lo, hi) inclusive value ranges, None for an open end.
    text: case-insensitive substring of prompt, chosen or rejected.
    pair_ids: only these pairs (a lasso selection on a sampled chart).
    """

    split: str | None = None
    text: str | None = None
    noise: bool | None = None
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    pair_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        for r in self.ranges:
            if len(r) != 3:
                raise ValueError(f"a range is (run_id, lo, hi), got {r!r}")
            if r[1] is not None and r[2] is not None and r[1] > r[2]:
                raise ValueError(f"empty range {r!r}: lo > hi")

    def runs(self) -> list[str]:
        return [r[0] for r in self.ranges]


def page_limit(limit: int) -> int:
    """How many rows a page may ask for: 1 to MAX_LIMIT."""
    return max(1, min(int(limit), MAX_LIMIT))


def page_order(runs: Sequence[str], order_run: str | None, descending: bool) -> str:
    """The ORDER BY of `Snapshot.page` over `Snapshot.table(runs, ...)`: by `order_run` (one of
    `runs`; unscored last) then row order, else row order. pair_lists walks pages in this order."""
    runs = list(runs)
    if order_run not in runs:
        return "row_idx, pair_id"
    return f"c{runs.index(order_run)} {'DESC' if descending else 'ASC'} NULLS LAST, row_idx, pair_id"


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` literally (its % and _ escaped with \\)."""
    esc = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


class NotLoaded(KeyError):
    """A query needs a score run (`load_run`) or a text search (`load_text`) this snapshot has not
    loaded: `what` is "run" or "text", `key` the run id or the text."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(key)
        self.what, self.key = what, key


class Snapshot:
    """One dataset's pairs (small columns) and score runs, in memory, for fast interactive SQL."""

    def __init__(self, con: duckdb.DuckDBPyConnection, dataset: str) -> None:
        self.dataset = dataset
        base = arrow_table(
            con,
            # rowid: the physical row, for fetching a page's texts without a scan (valid for
            # this database version only, like the whole snapshot).
            "SELECT pair_id, hash(pair_id) AS h, row_idx, split, coalesce(noise, false) AS noise, rowid AS rid "
            "FROM pairs WHERE dataset = ?",
            [dataset],
        )
        self.n = base.num_rows
        self.ids = base.column("pair_id").combine_chunks()
        self.h = base.column("h").to_numpy()
        self.order = np.argsort(self.h, kind="stable")
        self.h_sorted = self.h[self.order]
        self.base = base.drop_columns(["pair_id", "h"]).append_column("pos", pa.array(np.arange(self.n)))
        self.base = self.base.append_column("h", pa.array(self.h))
        self._values: dict[str, np.ndarray] = {}
        self._ranks: dict[str, np.ndarray] = {}
        self._masks: dict[tuple, np.ndarray] = {}
        self._derived: dict = {}  # per-run arrays derived on demand (sorted scores, bin indices)
        self._lock = threading.Lock()
        self._mem = duckdb.connect(":memory:")

    # ------------------------------------------------------------ loading
    def _locate(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(snapshot positions of the known pair-id hashes, which of `hashes` are known)."""
        i = np.clip(np.searchsorted(self.h_sorted, hashes), 0, max(self.n - 1, 0))
        ok = self.h_sorted[i] == hashes if self.n else np.zeros(len(hashes), bool)
        return self.order[i[ok]], ok

    def positions(self, hashes: np.ndarray) -> np.ndarray:
        """Snapshot positions of pair-id hashes (unknown ones dropped)."""
        return self._locate(hashes)[0]

    def load_run(self, con: duckdb.DuckDBPyConnection, run_id: str) -> np.ndarray:
        """The values of a score run aligned to the snapshot (NaN where a pair has no score)."""
        with self._lock:
            if run_id in self._values:
                return self._values[run_id]
            r = con.execute(
                "SELECT hash(s.pair_id) AS h, CASE WHEN isnan(s.value) THEN NULL ELSE s.value END AS v "
                "FROM scores s WHERE s.run_id = ? ORDER BY h",
                [run_id],
            ).fetchnumpy()
            h = np.asarray(r["h"], dtype=np.uint64)
            v = np.asarray(pd.array(r["v"], dtype="Float64").to_numpy(dtype=float, na_value=np.nan))
            out = np.full(self.n, np.nan)
            if len(h) == self.n and np.array_equal(h, self.h_sorted):
                out[self.order] = v  # the usual case: the run scores every pair
            else:
                pos, ok = self._locate(h)
                out[pos] = v[ok]
            # The pairs its tokenization left without a response token: no rule keeps them.
            trunc = fully_truncated_pairs(con, logp_runs_of(con, {"r": run_id}))
            self._masks[("truncated", run_id)] = self._mask(self.hash_ids(trunc))
            self._values[run_id] = out
            return out

    def load_text(self, con: duckdb.DuckDBPyConnection, text: str) -> np.ndarray:
        """A boolean mask of the pairs whose prompt, chosen or rejected contains `text` (any case)."""
        key = ("text", text)
        with self._lock:
            if key not in self._masks:
                pat = like_pattern(text)
                h = con.execute(
                    "SELECT hash(pair_id) AS h FROM pairs WHERE dataset = ? AND (prompt ILIKE ? ESCAPE '\\' "
                    "OR chosen ILIKE ? ESCAPE '\\' OR rejected ILIKE ? ESCAPE '\\')",
                    [self.dataset, pat, pat, pat],
                ).fetchnumpy()["h"]
                self._masks[key] = self._mask(np.asarray(h, dtype=np.uint64))
            return self._masks[key]

    def load_ids(self, key: tuple, pair_ids: Sequence[str]) -> np.ndarray:
        """A mask of given pair ids (a selection's members, a lasso), cached under `key`."""
        with self._lock:
            if key not in self._masks:
                self._masks[key] = self._mask(self.hash_ids(pair_ids))
            return self._masks[key]

    def wide(self, runs: Mapping[str, str], split: str | None = None) -> pd.DataFrame:
        """The split's pairs (every pair with None) as a frame: pair_id + one float column per
        metric of `runs` (loaded run ids; NaN = missing), in snapshot order. The one long-to-wide
        pivot of scores: engine.get_scores, calibration and diagnostics read it."""
        pos = np.flatnonzero(self.split_mask(split))
        cols = {"pair_id": self.ids.take(pos)}
        cols.update({m: pa.array(self.load_run_values(r)[pos]) for m, r in runs.items()})
        return pa.table(cols).to_pandas()

    def has_run(self, run_id: str) -> bool:
        return run_id in self._values

    def load_run_values(self, run_id: str) -> np.ndarray:
        """The aligned values of an already loaded run (NaN: no score); NotLoaded otherwise."""
        try:
            return self._values[run_id]
        except KeyError:
            raise NotLoaded("run", run_id) from None

    def has_text(self, text: str) -> bool:
        return ("text", text) in self._masks

    def noise_mask(self) -> np.ndarray:
        return self.derived(
            ("noise",), lambda: self.base.column("noise").to_numpy(zero_copy_only=False).astype(bool)
        )

    def derived(self, key: tuple, make):
        """An array derived from the snapshot (sorted scores, bin indices, hash orders), cached."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def hash_order(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions ordered by md5(pair_id:seed) then pair id, each position's hash): the order
        of every seeded random draw (storage/engine.py); cached per seed."""

        def make():
            cur = self._mem.cursor()
            cur.register("t", pa.table({"pos": np.arange(self.n), "pair_id": self.ids}))
            r = cur.execute(
                "SELECT pos, md5_number_lower(pair_id || ':' || ?) AS h FROM t ORDER BY h, pair_id",
                [str(int(seed))],
            ).fetchnumpy()
            order = np.asarray(r["pos"], dtype=np.int64)
            h = np.empty(self.n, dtype=np.uint64)
            h[order] = np.asarray(r["h"], dtype=np.uint64)
            return order, h

        with self._lock:
            return self.derived(("hash_order", int(seed)), make)

    def truncated(self, run_ids: Sequence[str]) -> np.ndarray:
        """The pairs fully truncated under any of the (loaded) score runs' tokenizations."""
        out = np.zeros(self.n, bool)
        for r in run_ids:
            out |= self._masks.get(("truncated", r), out)
        return out

    def bin_index(
        self, run_id: str, split: str | None, bins: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bin of each scored pair of the split, the scored mask, bins + 1 edges): equal-width
        bins over the split's score range, the last one closed; cached."""

        def make():
            v = self.load_run_values(run_id)
            ok = self.split_mask(split) & ~np.isnan(v)
            x = v[ok]
            lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
            wd = (hi - lo) / bins if hi > lo else 1.0
            b = np.minimum(((x - lo) / wd).astype(np.int64), bins - 1)
            return b, ok, lo + wd * np.arange(bins + 1)

        return self.derived(("bins", run_id, split, bins), make)

    def split_mask(self, split: str | None) -> np.ndarray:
        key = ("split", split)
        if key not in self._masks:
            col = self.base.column("split").to_numpy(zero_copy_only=False)
            self._masks[key] = np.ones(self.n, bool) if not split else col == split
        return self._masks[key]

    def _mask(self, hashes: np.ndarray) -> np.ndarray:
        m = np.zeros(self.n, bool)
        m[self.positions(hashes)] = True
        return m

    def ranks(self, run_id: str) -> np.ndarray:
        """percent_rank (0..1, SQL semantics: ties share the lowest) of a loaded run over its scored pairs."""
        with self._lock:
            if run_id not in self._ranks:
                v = self.load_run_values(run_id)
                cur = self._mem.cursor()
                cur.register("t", pa.table({"pos": np.arange(self.n), "v": pa.array(v, from_pandas=True)}))
                r = cur.execute(
                    "SELECT pos, percent_rank() OVER (ORDER BY v) AS pr FROM t WHERE v IS NOT NULL"
                ).fetchnumpy()
                out = np.full(self.n, np.nan)
                out[np.asarray(r["pos"], dtype=np.int64)] = r["pr"]
                self._ranks[run_id] = out
            return self._ranks[run_id]

    # ------------------------------------------------------------ querying
    def table(
        self,
        runs: Sequence[str],
        filters: Filters,
        ranks: Sequence[str] = (),
        ids: bool = False,
        masks: dict[str, np.ndarray] | None = None,
    ) -> tuple[pa.Table, str, list]:
        """The Arrow table t(pos, row_idx, split, noise, h, c<i>, k<i>, ...) and a WHERE clause with params."""
        cols = list(dict.fromkeys(list(runs) + filters.runs()))
        t = self.base
        for i, run in enumerate(cols):
            t = t.append_column(f"c{i}", pa.array(self.load_run_values(run), from_pandas=True))
        for i, run in enumerate(ranks):
            t = t.append_column(f"k{i}", pa.array(self.ranks(run), from_pandas=True))
        if ids:
            t = t.append_column("pair_id", self.ids)
        where, params = ["true"], []
        if filters.split:
            where.append("split = ?")
            params.append(filters.split)
        if filters.noise is not None:
            where.append("noise = ?")
            params.append(bool(filters.noise))
        for run, lo, hi in filters.ranges:
            c = f"c{cols.index(run)}"
            if lo is not None:
                where.append(f"{c} >= ?")
                params.append(float(lo))
            if hi is not None:
                where.append(f"{c} <= ?")
                params.append(float(hi))
        all_masks = dict(masks or {})
        if filters.text:
            if not self.has_text(filters.text):
                raise NotLoaded("text", filters.text)
            all_masks["m_text"] = self._masks[("text", filters.text)]
        if filters.pair_ids is not None:
            all_masks["m_ids"] = self.load_ids(("ids", filters.pair_ids), filters.pair_ids)
        for name, m in all_masks.items():
            t = t.append_column(name, pa.array(m))
            if name in ("m_text", "m_ids"):
                where.append(name)
        return t, " AND ".join(where), params

    def sql(self, table: pa.Table, sql: str, params: Sequence = ()) -> pd.DataFrame:
        cur = self._mem.cursor()
        try:
            cur.register("t", table)
            return cur.execute(sql, list(params)).df()
        finally:
            cur.close()

    def count(self, runs: Sequence[str] = (), filters: Filters = Filters()) -> int:
        """Pairs matching the filters."""
        t, where, params = self.table(runs, filters)
        return int(self.sql(t, f"SELECT count(*) AS n FROM t WHERE {where}", params)["n"].iloc[0])

    def histogram(self, run: str, bins: int = 60, filters: Filters = Filters()) -> pd.DataFrame:
        """Equal-width bins of one score over the matching pairs: bin_lo, bin_hi, count."""
        g = self._grid([run], max(1, min(int(bins), 500)), filters)
        return g.rename(columns={"lo0": "bin_lo", "hi0": "bin_hi"})

    def _grid(self, runs: list[str], bins: int, filters: Filters) -> pd.DataFrame:
        """Equal-width bins per run (over the matching pairs scored by every run; the last bin
        closed), counted per occupied cell in bin order: lo<k>, hi<k> per run, then count."""
        t, where, params = self.table(runs, filters)
        d = range(len(runs))
        scored = "".join(f" AND c{k} IS NOT NULL" for k in d)
        widths = ", ".join(
            f"min(c{k}) AS x{k}, CASE WHEN max(c{k}) > min(c{k}) THEN (max(c{k}) - min(c{k})) / ? ELSE 1.0 END AS w{k}"
            for k in d
        )
        cells = ", ".join(
            f"least(floor((c{k} - x{k}) / w{k}), ? - 1)::INTEGER AS i{k}, any_value(x{k}) AS x{k}, any_value(w{k}) AS w{k}"
            for k in d
        )
        df = self.sql(
            t,
            f"WITH v AS (SELECT * FROM t WHERE {where}{scored}), w AS (SELECT {widths} FROM v) "
            f"SELECT {cells}, count(*) AS n FROM v, w GROUP BY {', '.join(f'i{k}' for k in d)} ORDER BY ALL",
            params + [bins] * 2 * len(runs),
        )
        out = {}
        for k in d:
            out[f"lo{k}"] = df[f"x{k}"] + df[f"i{k}"] * df[f"w{k}"]
            out[f"hi{k}"] = out[f"lo{k}"] + df[f"w{k}"]
        return pd.DataFrame({**out, "count": df["n"].astype("int64")})

    def scatter_sample(
        self,
        x_run: str,
        y_run: str,
        color_run: str | None = None,
        n: int = 4000,
        filters: Filters = Filters(),
    ) -> pd.DataFrame:
        """A deterministic sample (the n smallest pair-id hashes) of the pairs scored by both runs."""
        runs = [x_run, y_run] + ([color_run] if color_run else [])
        t, where, params = self.table(runs, filters, ids=True)
        color = "c2" if color_run else "NULL::DOUBLE"
        return self.sql(
            t,
            f"SELECT pair_id, c0 AS x, c1 AS y, {color} AS color, noise, split FROM t "
            f"WHERE {where} AND c0 IS NOT NULL AND c1 IS NOT NULL ORDER BY h, pair_id LIMIT ?",
            params + [int(n)],
        )

    def bins_2d(self, x_run: str, y_run: str, bins: int = 80, filters: Filters = Filters()) -> pd.DataFrame:
        """A 2-D histogram of two scores over every matching pair: x_lo, x_hi, y_lo, y_hi, count."""
        g = self._grid([x_run, y_run], max(2, min(int(bins), 400)), filters)
        return g.rename(columns={"lo0": "x_lo", "hi0": "x_hi", "lo1": "y_lo", "hi1": "y_hi"})

    def page(
        self,
        runs: Sequence[str],
        filters: Filters = Filters(),
        order_run: str | None = None,
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> pd.DataFrame:
        """One page of pairs: pair_id, row_idx, split, noise and v<i> per run (texts: `previews`)."""
        runs = list(runs)
        t, where, params = self.table(runs, filters, ids=True)
        vals = "".join(f", c{i} AS v{i}" for i in range(len(runs)))
        return self.sql(
            t,
            f"SELECT pair_id, row_idx, split, noise, rid{vals} FROM t WHERE {where} "
            f"ORDER BY {page_order(runs, order_run, descending)} LIMIT ? OFFSET ?",
            params + [page_limit(limit), max(0, int(offset))],
        )

    def disagreements(
        self,
        run_a: str,
        run_b: str,
        limit: int = 50,
        offset: int = 0,
        filters: Filters = Filters(),
        direction: str = "both",
    ) -> pd.DataFrame:
        """Pairs whose percentile ranks (percent_rank over each run's pool) differ most."""
        order = {"both": "abs(k0 - k1)", "a_high": "k0 - k1", "b_high": "k1 - k0"}.get(direction)
        if order is None:
            raise ValueError(f"direction must be both, a_high or b_high, got {direction!r}")
        t, where, params = self.table([run_a, run_b], filters, ranks=[run_a, run_b], ids=True)
        return self.sql(
            t,
            f"SELECT pair_id, c0 AS a, c1 AS b, k0 AS rank_a, k1 AS rank_b, k0 - k1 AS rank_diff, noise, rid "
            f"FROM t WHERE {where} AND k0 IS NOT NULL AND k1 IS NOT NULL "
            f"ORDER BY {order} DESC, pair_id LIMIT ? OFFSET ?",
            params + [page_limit(limit), max(0, int(offset))],
        )

    def rank_correlation(self, run_a: str, run_b: str, filters: Filters = Filters()) -> dict:
        """Spearman (Pearson of percent ranks) and Pearson of two runs over their common pairs."""
        t, where, params = self.table([run_a, run_b], filters, ranks=[run_a, run_b])
        r = self.sql(
            t,
            f"SELECT count(*) AS n, corr(k0, k1) AS s, corr(c0, c1) AS p FROM t "
            f"WHERE {where} AND k0 IS NOT NULL AND k1 IS NOT NULL",
            params,
        ).iloc[0]
        return {"n": int(r["n"]), "spearman": _num(r["s"]), "pearson": _num(r["p"])}

    def presence(self, runs: dict[str, str]) -> pd.DataFrame:
        """Coverage: pairs per split and presence pattern (one boolean column per named run)."""
        names = list(runs)
        t, _, _ = self.table(list(runs.values()), Filters())
        flags = "".join(f", c{i} IS NOT NULL AS f{i}" for i in range(len(names)))
        df = self.sql(
            t, f"SELECT split{flags}, count(*) AS pairs FROM t GROUP BY ALL ORDER BY split, pairs DESC"
        )
        return df.rename(columns={f"f{i}": n for i, n in enumerate(names)})

    def percentile(self, run_id: str, pair_id: str) -> tuple[float | None, float | None]:
        """(value, share of the run's scored pairs with a value <= it, in %) of one pair."""
        pos = self.positions(self.hash_ids([pair_id]))
        v = self.load_run_values(run_id)
        if not len(pos) or np.isnan(v[pos[0]]):
            return None, None
        x = float(v[pos[0]])
        scored = ~np.isnan(v)
        return x, 100.0 * float(np.count_nonzero(v[scored] <= x)) / max(int(scored.sum()), 1)

    def hash_ids(self, ids: Sequence[str]) -> np.ndarray:
        r = (
            self._mem.cursor()
            .execute("SELECT hash(x) AS h FROM unnest(?::VARCHAR[]) t(x)", [list(ids)])
            .fetchnumpy()
        )
        return np.asarray(r["h"], dtype=np.uint64)


def _num(x) -> float | None:
    return None if x is None or pd.isna(x) else float(x)
