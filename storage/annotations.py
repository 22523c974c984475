"""Annotations by several people: each annotator's decision on a pair, an append-only history, the
effective decision per pair, agreement between annotators, and the review queue.

A **decision** of one annotator on one pair is: a flag (a label such as "noisy label"), a note,
a forced selection override (`force` = keep | drop | NULL: the rule decides) and `swapped`
("chosen and rejected are the wrong way round"). Saving a decision with nothing set records
"I looked, the rule decides". Each save and each withdrawal appends a row to
`annotation_history` (who, role, when, the decision before -> after); nothing is overwritten.

**The effective decision** (the `annotations` view, schema migration 2: the one place it is
computed; selection rules, exports and the pages read it):
1. A pair's decision, for agreement, is (force, swapped); flags and notes are commentary.
2. If any curator decided the pair, only the curators' decisions count; else everyone's.
3. If the decisions that count all agree, that is the effective decision
   (status `curator`, `agreed`, or `single` when one annotator decided);
   otherwise the pair is `conflict`: no forced keep/drop and no swap until someone resolves it
   (a curator's decision, or the annotators converging).
A role is the one the person had when they saved (roles come from the server's configuration,
which the database does not know).

Optimistic concurrency is per annotator: `expected` is the `updated_at` of *this annotator's*
decision as their page showed it; two people saving the same pair at once are both kept, and
only the same person saving from two stale tabs is told.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import threading
import time

import duckdb
import numpy as np
import pandas as pd

from prefsift.storage.errors import AnnotationConflict, NotFound, StorageError

ROLES = ("annotator", "curator")
FORCES = (None, "keep", "drop")
SIGNALS = ("disagreement", "band_edge", "noisy", "random")
MAX_NOTE = 10_000
UNCHECKED = object()  # expected=UNCHECKED: no optimistic check (scripts, the CLI)
_FIELDS = ("flag", "note", "force", "swapped")
_DECISION_COLS = ("annotator", "role", "flag", "note", "force", "swapped", "updated_at")


def local_user() -> str:
    """The name of a person on this machine: $PREFSIFT_USER, else the OS user."""
    name = (os.environ.get("PREFSIFT_USER") or "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def decision_label(force: str | None, swapped: bool) -> str:
    """What is compared for agreement: 'rule', 'keep', 'drop', each possibly '+swapped'."""
    return (force or "rule") + ("+swapped" if swapped else "")


def _check(pair_id: str, annotator, role, flag, note, force, swapped) -> None:
    where = f"annotation of pair {pair_id!r}"
    if not isinstance(annotator, str) or not annotator.strip():
        raise ValueError(f"{where}: field 'annotator' is empty (who is saving?)")
    if role not in ROLES:
        raise ValueError(f"{where}: field 'role' must be one of {ROLES}, got {role!r}")
    if force not in FORCES:
        raise ValueError(f"{where}: field 'force' must be keep, drop or empty, got {force!r}")
    if not isinstance(swapped, bool):
        raise ValueError(f"{where}: field 'swapped' must be true or false, got {swapped!r}")
    if flag is not None and (not isinstance(flag, str) or len(flag) > 200):
        raise ValueError(f"{where}: field 'flag' must be text of at most 200 characters")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise ValueError(f"{where}: field 'note' must be text of at most {MAX_NOTE:,} characters")


def _as_dict(row) -> dict | None:
    return None if row is None else dict(zip(_DECISION_COLS, row))


def _where(dataset: str, **equal) -> tuple[str, list]:
    """`WHERE dataset = ? AND col = ? ...` for each given (non-empty) value, and its parameters
    (column names come from the keyword names, never from a user)."""
    given = {c: v for c, v in equal.items() if v}
    return "WHERE " + " AND ".join(f"{c} = ?" for c in ["dataset", *given]), [dataset, *given.values()]


def get_decision(con: duckdb.DuckDBPyConnection, dataset: str, pair_id: str, annotator: str) -> dict | None:
    """One annotator's current decision on a pair (annotator, role, flag, note, force, swapped,
    updated_at), or None."""
    return _as_dict(
        con.execute(
            f"SELECT {', '.join(_DECISION_COLS)} FROM annotation_decisions "
            "WHERE dataset = ? AND pair_id = ? AND annotator = ?",
            [dataset, pair_id, annotator],
        ).fetchone()
    )


def decisions(con: duckdb.DuckDBPyConnection, dataset: str, pair_id: str | None = None) -> pd.DataFrame:
    """Every annotator's current decision (of one pair, or of the dataset), with its label."""
    where, params = _where(dataset, pair_id=pair_id)
    df = con.execute(
        f"SELECT pair_id, {', '.join(_DECISION_COLS)} FROM annotation_decisions "
        f"{where} ORDER BY pair_id, updated_at, annotator",
        params,
    ).df()
    df = _nulls(df, ("flag", "note", "force", "role"))
    df["decision"] = [decision_label(f, bool(s)) for f, s in zip(df["force"], df["swapped"])]
    return df


def _nulls(df: pd.DataFrame, cols) -> pd.DataFrame:
    """NULL text as None (DuckDB's DataFrames give NaN), so `force` is None, not a float."""
    for c in cols:
        if c in df:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _snapshot(d: dict | None) -> str | None:
    return None if d is None else json.dumps({k: d.get(k) for k in _FIELDS})


# One decision write at a time in this process (the dashboard's sessions are its threads). DuckDB's
# own conflict detection does not make "check updated_at, then write" atomic between two
# connections: two first saves of one key both insert and the second fails at COMMIT ("duplicate
# key") or raises ConstraintException; a save whose snapshot predates another's committed write
# upserts over it silently (tests/dashboard/test_annotation_interleavings.py runs every order).
# Other processes are kept out by DuckDB's file lock while a writer is open.
_SAVE_LOCK = threading.Lock()


def _is_write_conflict(exc: Exception) -> bool:
    """Another transaction wrote the same decision first (retry: the next attempt sees it)."""
    msg = str(exc).lower()
    return "conflict" in msg or "duplicate key" in msg


def _write(con, dataset, pair_id, annotator, role, expected, tries, change) -> dict | None:
    """The transaction shared by save and withdraw: optimistic check, change, history row; saves
    of one process run one at a time (`_SAVE_LOCK`), write conflicts from elsewhere are retried."""
    with _SAVE_LOCK:
        return _write_once_locked(con, dataset, pair_id, annotator, role, expected, tries, change)


def _write_once_locked(con, dataset, pair_id, annotator, role, expected, tries, change) -> dict | None:
    for attempt in range(tries):
        try:
            con.execute("BEGIN TRANSACTION")
            current = get_decision(con, dataset, pair_id, annotator)
            if expected is not UNCHECKED and (current or {}).get("updated_at") != expected:
                con.execute("ROLLBACK")
                raise AnnotationConflict(
                    f"you ({annotator}) changed your decision on this pair elsewhere (another tab or "
                    "window) after this page showed it"
                    + (f" (saved {current['updated_at']:%Y-%m-%d %H:%M:%S})" if current else " (withdrawn)")
                    + ": this change was not saved",
                    current,
                )
            after = change(current)
            saved = get_decision(con, dataset, pair_id, annotator)
            con.execute(
                "INSERT INTO annotation_history (dataset, pair_id, annotator, role, saved_at, action, before, after) "
                "VALUES (?, ?, ?, ?, coalesce(?, now()::TIMESTAMP), ?, ?, ?)",
                [
                    dataset,
                    pair_id,
                    annotator,
                    role,
                    (saved or {}).get("updated_at"),
                    "save" if after else "withdraw",
                    _snapshot(current),
                    _snapshot(saved),
                ],
            )
            con.execute("COMMIT")
            return saved
        except (duckdb.TransactionException, duckdb.ConstraintException) as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            if not _is_write_conflict(exc) or attempt == tries - 1:
                raise StorageError(f"could not save the decision of {annotator} on {pair_id}: {exc}") from exc
            time.sleep(0.02 * (attempt + 1))
        except AnnotationConflict:
            raise
        except Exception:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
    return None  # not reached


def save_decision(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    pair_id: str,
    annotator: str,
    *,
    flag: str | None = None,
    note: str | None = None,
    force: str | None = None,
    swapped: bool = False,
    role: str = "annotator",
    expected=UNCHECKED,
    tries: int = 8,
) -> dict:
    """Record `annotator`'s decision on a pair (replacing their own previous one; other
    annotators' decisions are untouched) and append it to the history; returns it as saved.

    `expected`: the `updated_at` of this annotator's decision as their page showed it (None: none).
    If theirs changed since, nothing is written and `AnnotationConflict` carries the current one.
    DuckDB's "Conflict on update" between simultaneous transactions is retried, never raised as is.
    """
    flag = (flag or "").strip() or None
    note = (note or "").strip() or None
    _check(pair_id, annotator, role, flag, note, force, swapped)
    if not con.execute(
        "SELECT count(*) FROM pairs WHERE dataset = ? AND pair_id = ?", [dataset, pair_id]
    ).fetchone()[0]:
        raise NotFound(f"annotation of pair {pair_id!r}: no such pair in dataset {dataset!r}")

    def change(current):
        con.execute(
            "INSERT INTO annotation_decisions (dataset, pair_id, annotator, role, flag, note, force, swapped, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP) ON CONFLICT (dataset, pair_id, annotator) DO UPDATE SET "
            "role = excluded.role, flag = excluded.flag, note = excluded.note, force = excluded.force, "
            "swapped = excluded.swapped, updated_at = excluded.updated_at",
            [dataset, pair_id, annotator, role, flag, note, force, bool(swapped)],
        )
        return True

    return _write(con, dataset, pair_id, annotator, role, expected, tries, change)


def withdraw_decision(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    pair_id: str,
    annotator: str,
    *,
    role: str = "annotator",
    expected=UNCHECKED,
    tries: int = 8,
) -> None:
    """Remove `annotator`'s decision on a pair (the history keeps it). No decision: nothing happens."""
    _check(pair_id, annotator, role, None, None, None, False)

    def change(current):  # returns None: the history records a withdrawal
        if current is not None:
            con.execute(
                "DELETE FROM annotation_decisions WHERE dataset = ? AND pair_id = ? AND annotator = ?",
                [dataset, pair_id, annotator],
            )

    if get_decision(con, dataset, pair_id, annotator) is None and expected in (UNCHECKED, None):
        return None
    _write(con, dataset, pair_id, annotator, role, expected, tries, change)
    return None


def history(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    pair_id: str | None = None,
    annotator: str | None = None,
    limit: int = 500,
) -> pd.DataFrame:
    """The append-only history, newest first: who, role, when, action, before -> after."""
    where, params = _where(dataset, pair_id=pair_id, annotator=annotator)
    sql = f"SELECT event_id, pair_id, annotator, role, saved_at, action, before, after FROM annotation_history {where}"
    df = con.execute(sql + " ORDER BY event_id DESC LIMIT ?", [*params, int(limit)]).df()
    return _nulls(df, ("before", "after"))


def describe(d) -> str:
    """A decision (a dict or a JSON text) in words: 'force drop, swapped, flag harmful, note “…”'."""
    if d is None or (isinstance(d, float) and math.isnan(d)):
        return "(none)"
    if isinstance(d, str):
        d = json.loads(d)
    d = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
    parts = [{"keep": "force keep", "drop": "force drop"}.get(d.get("force"), "rule decides")]
    if d.get("swapped"):
        parts.append("labels swapped")
    if d.get("flag"):
        parts.append(f"flag {d['flag']}")
    if d.get("note"):
        parts.append(f"note “{d['note']}”")
    return ", ".join(parts)


# ---------------------------------------------------------------- the effective decision
_EFFECTIVE_COLS = (
    "pair_id, force, swapped, status, flag, note, updated_at, n_deciding, n_annotators, decided_by"
)


def effective(
    con: duckdb.DuckDBPyConnection, dataset: str, pair_id: str | None = None, status: str | None = None
) -> pd.DataFrame:
    """The effective decision of every decided pair (or one pair), from the `annotations` view."""
    where, params = _where(dataset, pair_id=pair_id, status=status)
    df = con.execute(
        f"SELECT {_EFFECTIVE_COLS} FROM annotations {where} ORDER BY updated_at DESC, pair_id", params
    )
    return _nulls(df.df(), ("force", "flag", "note"))


def effective_one(con: duckdb.DuckDBPyConnection, dataset: str, pair_id: str) -> dict | None:
    df = effective(con, dataset, pair_id)
    return None if df.empty else df.iloc[0].to_dict()


def forced(con: duckdb.DuckDBPyConnection, dataset: str) -> dict[str, str]:
    """pair_id -> 'keep' | 'drop' for the pairs whose effective decision forces them."""
    rows = con.execute(
        "SELECT pair_id, force FROM annotations WHERE dataset = ? AND force IN ('keep', 'drop')", [dataset]
    ).fetchall()
    return dict(rows)


def conflicts(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """Pairs in conflict, with each annotator's decision listed ('alice: drop; bob: rule')."""
    return con.execute(
        """
        SELECT a.pair_id, a.n_deciding, a.decided_by,
               string_agg(d.annotator || ' (' || d.role || '): ' || coalesce(d.force, 'rule')
                          || CASE WHEN d.swapped THEN '+swapped' ELSE '' END, '; ' ORDER BY d.annotator)
                   AS decisions,
               a.updated_at
        FROM annotations a JOIN annotation_decisions d USING (dataset, pair_id)
        WHERE a.dataset = ? AND a.status = 'conflict'
        GROUP BY a.pair_id, a.n_deciding, a.decided_by, a.updated_at
        ORDER BY a.updated_at DESC, a.pair_id
        """,
        [dataset],
    ).df()


def status_counts(con: duckdb.DuckDBPyConnection, dataset: str) -> dict[str, int]:
    rows = con.execute(
        "SELECT status, count(*) FROM annotations WHERE dataset = ? GROUP BY status", [dataset]
    )
    return {s: int(n) for s, n in rows.fetchall()}


def annotator_counts(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """Per annotator: pairs decided now, by decision, and history events."""
    return con.execute(
        """
        SELECT annotator, any_value(role ORDER BY updated_at DESC) AS role, count(*) AS pairs_decided,
               count(*) FILTER (WHERE force = 'keep') AS force_keep,
               count(*) FILTER (WHERE force = 'drop') AS force_drop,
               count(*) FILTER (WHERE swapped) AS swapped,
               max(updated_at) AS last_saved
        FROM annotation_decisions WHERE dataset = ? GROUP BY annotator ORDER BY annotator
        """,
        [dataset],
    ).df()


# ---------------------------------------------------------------- agreement between annotators
def cohen_kappa(a, b, n_boot: int = 2000, seed: int = 0) -> dict:
    """Cohen's κ of two annotators' labels on the same items, with a 95% percentile-bootstrap
    interval (resampling items, seeded) and the chance level p_e.

    κ = (p_o − p_e) / (1 − p_e): p_o the observed agreement, p_e the agreement two annotators
    labelling independently with their own label frequencies would reach (κ = 0). κ is undefined
    (NaN) when p_e = 1 (both used one and the same label throughout)."""
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    n = len(a)
    if n != len(b):
        raise ValueError(f"label lists differ in length ({n} and {len(b)})")
    out = {"n": n, "p_o": math.nan, "p_e": math.nan, "kappa": math.nan, "lo": math.nan, "hi": math.nan}
    if n == 0:
        return out
    cats, codes = np.unique(np.concatenate([a, b]).astype(str), return_inverse=True)
    ca, cb = codes[:n], codes[n:]
    k = len(cats)

    def stats(ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # ia, ib: (r, n) codes -> per row p_o, and p_e = sum over labels of the product of their frequencies
        return (ia == ib).mean(axis=1), sum((ia == c).mean(axis=1) * (ib == c).mean(axis=1) for c in range(k))

    po, pe = stats(ca[None, :], cb[None, :])
    po, pe = float(po[0]), float(pe[0])
    out.update(p_o=po, p_e=pe)
    if pe >= 1 - 1e-12:
        return out
    out["kappa"] = (po - pe) / (1 - pe)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    bpo, bpe = stats(ca[idx], cb[idx])
    ok = bpe < 1 - 1e-12
    if ok.sum() >= max(10, n_boot // 2):
        kb = (bpo[ok] - bpe[ok]) / (1 - bpe[ok])
        out["lo"], out["hi"] = (float(x) for x in np.quantile(kb, [0.025, 0.975]))
    return out


def agreement(con: duckdb.DuckDBPyConnection, dataset: str, n_boot: int = 2000) -> pd.DataFrame:
    """Cohen's κ for every pair of annotators over the pairs both decided (decision = force and
    swap), with the 95% bootstrap interval, the chance level p_e and the observed agreement p_o."""
    d = decisions(con, dataset)
    rows = []
    by = {name: dict(zip(g["pair_id"], g["decision"])) for name, g in d.groupby("annotator")}
    names = sorted(by)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            common = sorted(set(by[x]) & set(by[y]))
            k = cohen_kappa([by[x][p] for p in common], [by[y][p] for p in common], n_boot=n_boot)
            agree = int(round(k["p_o"] * k["n"])) if k["n"] else 0
            rows.append((x, y, k["n"], agree, k["p_o"], k["p_e"], k["kappa"], k["lo"], k["hi"]))
    cols = ["annotator_a", "annotator_b", "pairs_both", "agree", "p_observed", "p_chance", "kappa"]
    return pd.DataFrame(rows, columns=[*cols, "kappa_lo", "kappa_hi"])


# ---------------------------------------------------------------- the review queue
def review_queue(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    annotator: str,
    signal: str = "disagreement",
    limit: int = 1,
    split: str | None = None,
    runs: dict | None = None,
    band: tuple[float, float] = (10.0, 90.0),
) -> tuple[pd.DataFrame, int]:
    """The next pairs `annotator` has not decided yet, ordered by `signal`, and how many remain.

    - disagreement: the largest difference between the percentile ranks of two score runs (by
      default the dataset's newest LossDiff and IRM runs, else its first two metrics);
    - band_edge: the pairs whose percentile in a score run is nearest a band edge (default 10 and
      90, Tune's default rule), i.e. those a small change of the rule would flip;
    - noisy: pairs the data flags noisy or another annotator flagged "noisy label" first;
    - random: a random order, fixed per annotator (md5 of annotator and pair id).
    Ties, and pairs a signal cannot rank (no score), come last, in row order."""
    if signal not in SIGNALS:
        raise ValueError(f"review signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    if split is not None and split not in ("train", "val", "eval"):
        raise ValueError(f"split must be train, val or eval, got {split!r}")
    todo = (
        "SELECT p.pair_id, p.row_idx, coalesce(p.noise, false) AS noise FROM pairs p WHERE p.dataset = $ds"
        + (" AND p.split = $split" if split else "")
        + " AND NOT EXISTS (SELECT 1 FROM annotation_decisions d WHERE d.dataset = $ds "
        "AND d.pair_id = p.pair_id AND d.annotator = $who)"
    )
    params: dict = {"ds": dataset, "who": annotator}
    if split:
        params["split"] = split
    ranks = ""
    if signal in ("disagreement", "band_edge"):
        if runs is None:
            from prefsift.storage.runs import latest_score_runs

            latest = latest_score_runs(con, dataset)
            pref = [m for m in ("lossdiff", "irm") if m in latest] + sorted(set(latest) - {"lossdiff", "irm"})
            runs = {m: latest[m] for m in pref[: 2 if signal == "disagreement" else len(pref)]}
        run_ids = list(dict(runs).values())
        if signal == "disagreement" and len(run_ids) < 2:
            raise StorageError(
                f"dataset {dataset!r} needs two score runs for the 'disagreement' order (has {len(run_ids)})"
            )
        params["runs"] = run_ids
        ranks = (
            ", r AS (SELECT s.run_id, s.pair_id, 100 * percent_rank() OVER (PARTITION BY s.run_id ORDER BY s.value) AS k "
            "FROM scores s JOIN pairs p ON p.pair_id = s.pair_id AND p.dataset = $ds "
            "WHERE s.run_id IN (SELECT unnest($runs::VARCHAR[])) AND s.value IS NOT NULL AND NOT isnan(s.value)"
            + (" AND p.split = $split" if split else "")
            + ")"
        )
    if signal == "disagreement":
        params["ra"], params["rb"] = run_ids[0], run_ids[1]
        value = (
            "(SELECT abs(max(k) FILTER (WHERE run_id = $ra) - max(k) FILTER (WHERE run_id = $rb)) "
            "FROM r WHERE r.pair_id = t.pair_id)"
        )
        order = "value DESC NULLS LAST"
    elif signal == "band_edge":
        params["lo"], params["hi"] = float(band[0]), float(band[1])
        value = "(SELECT min(least(abs(k - $lo), abs(k - $hi))) FROM r WHERE r.pair_id = t.pair_id)"
        order = "value ASC NULLS LAST"
    elif signal == "noisy":
        value = (
            "(t.noise OR EXISTS (SELECT 1 FROM annotation_decisions d WHERE d.dataset = $ds "
            "AND d.pair_id = t.pair_id AND d.flag = 'noisy label'))::INTEGER"
        )
        order = "value DESC"
    else:
        value = "md5_number_lower($who || ':' || t.pair_id)::DOUBLE"
        order = "value ASC"
    sql = (
        f"WITH t AS ({todo}){ranks} SELECT t.pair_id, {value} AS value, t.noise FROM t "
        f"ORDER BY {order}, t.row_idx, t.pair_id LIMIT $limit"
    )
    params["limit"] = max(1, int(limit))
    df = con.execute(sql, params).df()
    remaining = con.execute(
        f"SELECT count(*) FROM ({todo})", {k: v for k, v in params.items() if k in ("ds", "who", "split")}
    ).fetchone()[0]
    return df, int(remaining)
