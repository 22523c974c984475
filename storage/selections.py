"""Named selections: a rule evaluated once, stored with its members, thresholds and runs.

A selection records everything needed to explain and reproduce it: the rule (dict), the
thresholds it resolved to, the split, whether annotations were applied (and how many pairs
they forced), and the score run of every metric the rule read. Re-evaluating the stored rule
on the stored runs gives the same members (tested).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import duckdb
import pandas as pd
import pyarrow as pa

from prefsift.storage.db import lit, transaction
from prefsift.storage.engine import RuleResult, select
from prefsift.storage.errors import NotFound, StorageError
from prefsift.storage.pairs import require_dataset

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class SelectionExists(StorageError):
    """A selection of that name exists (pass force=True / --force to replace it)."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise StorageError(
            f"bad selection name {name!r}: 1-128 letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return name


def selection_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM selections WHERE name = ?", [name]).fetchone()[0])


def _resolved_record(result: RuleResult) -> dict:
    return {
        "thresholds": result.resolved,
        "split": result.split,
        "with_annotations": result.with_annotations,
        "forced_keep": result.forced_keep,
        "forced_drop": result.forced_drop,
        "n_missing": result.n_missing,
        "n_truncated": result.n_truncated,
        "missing": result.missing,
        "rule_text": result.rule,
    }


def save_selection(
    con: duckdb.DuckDBPyConnection,
    name: str,
    dataset: str,
    rule,
    result: RuleResult,
    members: pa.Table,
    force: bool = False,
) -> dict:
    """Store an evaluated rule and its member pair ids (a table with a pair_id column)."""
    from prefsift.storage.rules import coerce_rule, to_dict

    check_name(name)
    require_dataset(con, dataset)
    sel_members_in = members.select(["pair_id"])  # noqa: F841 - read by DuckDB by name
    with transaction(con):
        if selection_exists(con, name):
            if not force:
                raise SelectionExists(f"a selection named {name!r} exists (use --force to replace it)")
            con.execute("DELETE FROM selection_members WHERE selection = ?", [name])
            con.execute("DELETE FROM selections WHERE name = ?", [name])
        # A replacement scan of the local Arrow table: unlike con.register it works even while
        # an earlier fetchone() result is open on the connection (DuckDB 2 refuses register then).
        con.execute("INSERT INTO selection_members SELECT DISTINCT ?, pair_id FROM sel_members_in", [name])
        n = con.execute("SELECT count(*) FROM selection_members WHERE selection = ?", [name]).fetchone()[0]
        con.execute(
            "INSERT INTO selections (name, dataset, rule, resolved, score_runs, n_kept, n_total) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                name,
                dataset,
                json.dumps(to_dict(coerce_rule(rule))),
                json.dumps(_resolved_record(result)),
                json.dumps(result.runs),
                int(n),
                int(result.n_total),
            ],
        )
    return get_selection(con, name)


def create_selection(
    con: duckdb.DuckDBPyConnection,
    name: str,
    dataset: str,
    rule=None,
    runs: Mapping[str, str] | None = None,
    split: str | None = "train",
    with_annotations: bool = True,
    force: bool = False,
) -> dict:
    """Evaluate `rule` (default LossDiff-IRM 10-90) with the engine and store it with its members."""
    check_name(name)
    if selection_exists(con, name) and not force:
        raise SelectionExists(f"a selection named {name!r} exists (use --force to replace it)")
    ev = select(con, dataset, rule, runs, split, with_annotations)
    return save_selection(
        con, name, dataset, rule, ev.result, pa.table({"pair_id": pa.array(ev.ids(), pa.string())}), force
    )


_SEL_COLS = ["name", "dataset", "rule", "resolved", "score_runs", "n_kept", "n_total", "created_at"]


def get_selection(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    row = con.execute(f"SELECT {', '.join(_SEL_COLS)} FROM selections WHERE name = ?", [name]).fetchone()
    if row is None:
        names = [r[0] for r in con.execute("SELECT name FROM selections ORDER BY name LIMIT 20").fetchall()]
        hint = f" (have: {', '.join(names)})" if names else " (none yet: run `prefsift select`)"
        raise NotFound(f"no selection named {name!r}{hint}")
    out = dict(zip(_SEL_COLS, row))
    for k in ("rule", "resolved", "score_runs"):
        out[k] = json.loads(out[k] or "{}")
    from prefsift.storage.rules import rule_from_dict

    out["rule_text"] = rule_from_dict(out["rule"]).to_text()
    out["split"] = out["resolved"].get("split", "train")
    out["fraction"] = out["n_kept"] / out["n_total"] if out["n_total"] else 0.0
    return out


MEMBERS_SQL = "SELECT pair_id FROM selection_members WHERE selection = ? ORDER BY pair_id"


def members_relation(name: str) -> str:
    """The members of a selection as an SQL subquery (pair_id), to join with."""
    return f"(SELECT pair_id FROM selection_members WHERE selection = {lit(name)})"


def member_ids(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    """A selection's member pair ids, sorted (empty for an unknown selection)."""
    return [r[0] for r in con.execute(MEMBERS_SQL, [name]).fetchall()]


def list_selections(con: duckdb.DuckDBPyConnection, dataset: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE dataset = ?", [dataset]) if dataset else ("", [])
    df = con.execute(
        f"SELECT name, dataset, rule, resolved->>'split' AS split, n_kept, n_total, "
        f"round(n_kept / nullif(n_total, 0), 4) AS fraction, created_at FROM selections {where} "
        "ORDER BY created_at, name",
        params,
    ).df()
    if len(df):
        from prefsift.storage.rules import rule_from_dict

        df["rule"] = [rule_from_dict(json.loads(r)).to_text() for r in df["rule"]]
    return df


def overlap(con: duckdb.DuckDBPyConnection, a: str, b: str) -> dict:
    """Overlap coefficient |A and B| / min(|A|, |B|) (the paper's measure) and Jaccard."""
    get_selection(con, a)
    get_selection(con, b)
    n_a, n_b, n_ab = con.execute(
        """
        SELECT (SELECT count(*) FROM selection_members WHERE selection = $a),
               (SELECT count(*) FROM selection_members WHERE selection = $b),
               (SELECT count(*) FROM selection_members x JOIN selection_members y
                  ON x.pair_id = y.pair_id AND x.selection = $a AND y.selection = $b)
        """,
        {"a": a, "b": b},
    ).fetchone()
    return overlap_counts(int(n_a), int(n_b), int(n_ab))


def overlap_counts(n_a: int, n_b: int, n_ab: int) -> dict:
    small = min(n_a, n_b)
    union = n_a + n_b - n_ab
    return {
        "n_a": n_a,
        "n_b": n_b,
        "n_both": n_ab,
        "overlap": n_ab / small if small else 0.0,
        "jaccard": n_ab / union if union else 0.0,
    }
