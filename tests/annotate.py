"""One person's decision on a pair in one call, as the tests write them (the dashboard saves through
`dashboard.data.decide`, i.e. storage.annotations.save_decision / withdraw_decision)."""

from __future__ import annotations

import duckdb

from prefsift.storage import annotations as ann


def save_annotation(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    pair_id: str,
    flag: str | None,
    note: str | None,
    force: str | None,
    expected=ann.UNCHECKED,
    tries: int = 8,
    annotator: str | None = None,
    role: str = "curator",
    swapped: bool = False,
) -> dict | None:
    """One person's decision (default: this machine's user, a curator, as on loopback), stored per
    annotator with history by storage.annotations; an empty one withdraws theirs. Returns the
    decision as saved (None when withdrawn). `expected`: see storage.annotations.save_decision
    (annotations.UNCHECKED: no optimistic check)."""
    who = annotator or ann.local_user()
    if not (flag or note or force or swapped):
        ann.withdraw_decision(con, dataset, pair_id, who, role=role, expected=expected, tries=tries)
        return None
    return ann.save_decision(
        con, dataset, pair_id, who, flag=flag, note=note, force=force, swapped=swapped, role=role,
        expected=expected, tries=tries,
    )  # fmt: skip
