"""Where a pair sits in a list a person is walking through (the pair inspector's next/previous).

A list is either explicit (the few dozen ids a Disagreements or Compare table showed) or a query
on a `Snapshot`: the pairs matching Explore's filters in Explore's sort order, however many. A
query list is never materialised: one window query answers "position, total, previous, next"
for one pair.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefsift.storage.explore_snapshot import Filters, Snapshot, page_order

__all__ = ["ids_position", "query_position", "scored_filters"]


def ids_position(ids: Sequence[str], pair_id: str) -> dict | None:
    """{index (0-based), total, prev, next} of `pair_id` in an explicit list, None if absent."""
    ids = list(ids)
    try:
        i = ids.index(pair_id)
    except ValueError:
        return None
    return {
        "index": i,
        "total": len(ids),
        "prev": ids[i - 1] if i > 0 else None,
        "next": ids[i + 1] if i + 1 < len(ids) else None,
    }


def query_position(
    snap: Snapshot,
    runs: Sequence[str],
    filters: Filters,
    order_run: str | None,
    descending: bool,
    pair_id: str,
) -> dict | None:
    """{index, total, prev, next} of `pair_id` among the pairs matching `filters`, ordered as
    `Snapshot.page` orders them (by `order_run` then row order, or by row order); None if the pair
    does not match. The runs (and a text filter) must be loaded on the snapshot."""
    t, where, params = snap.table(runs, filters, ids=True)
    order = page_order(runs, order_run, descending)
    df = snap.sql(
        t,
        "SELECT rn, n, prev, nxt FROM ("
        f"SELECT pair_id, row_number() OVER w - 1 AS rn, count(*) OVER () AS n, "
        f"lag(pair_id) OVER w AS prev, lead(pair_id) OVER w AS nxt FROM t WHERE {where} "
        f"WINDOW w AS (ORDER BY {order})) WHERE pair_id = ?",
        [*params, pair_id],
    )
    if df.empty:
        return None
    r = df.iloc[0]
    return {
        "index": int(r["rn"]),
        "total": int(r["n"]),
        "prev": None if r["prev"] is None or r["prev"] != r["prev"] else str(r["prev"]),
        "next": None if r["nxt"] is None or r["nxt"] != r["nxt"] else str(r["nxt"]),
    }


def scored_filters(run_id: str) -> Filters:
    """The pairs that have a value under `run_id` (eval pairs and fully truncated ones have none)."""
    return Filters(ranges=((run_id, float("-inf"), float("inf")),))
