"""Per-token log-probs of one pair (the dashboard's pair inspector): table `token_logps`."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

from prefsift.storage.db import transaction


def save_token_logps(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    ref_run: str | None,
    pair_id: str,
    rows: Sequence[dict],
) -> None:
    """Replace the token rows of (run_id, pair_id). Each row: side, tokens, logps, ref_logps."""
    with transaction(con):
        con.execute("DELETE FROM token_logps WHERE run_id = ? AND pair_id = ?", [run_id, pair_id])
        for r in rows:
            if r["side"] not in ("chosen", "rejected"):
                raise ValueError(f"side must be chosen or rejected, got {r['side']!r}")
            ref = r.get("ref_logps")
            if len(r["tokens"]) != len(r["logps"]) or (ref is not None and len(ref) != len(r["logps"])):
                raise ValueError("tokens, logps and ref_logps must have the same length")
            con.execute(
                "INSERT INTO token_logps (run_id, ref_run, pair_id, side, tokens, logps, ref_logps) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    ref_run,
                    pair_id,
                    r["side"],
                    list(r["tokens"]),
                    [float(x) for x in r["logps"]],
                    None if ref is None else [float(x) for x in ref],
                ],
            )


def token_logps(con: duckdb.DuckDBPyConnection, pair_id: str) -> pd.DataFrame:
    """Per-token log-probs of a pair under a policy and its reference, newest explanation first."""
    return con.execute(
        "SELECT t.run_id, t.ref_run, t.side, t.tokens, t.logps, t.ref_logps, m.name AS policy "
        "FROM token_logps t LEFT JOIN logp_runs l ON l.run_id = t.run_id LEFT JOIN models m ON m.model_id = l.model_id "
        "WHERE t.pair_id = ? ORDER BY l.created_at DESC NULLS LAST, t.run_id, t.side",
        [pair_id],
    ).df()
