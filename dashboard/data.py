"""The dashboard's only data access: cached reads through `storage`, short writes, job launches.

Every read opens a short read-only connection (DuckDB lets one process hold the file, and a
job must be able to commit between two clicks) and is cached with `st.cache_data`, keyed by
the database's version (mtime and size of the file and its WAL), so results refresh as soon
as a job commits. Interactive whole-dataset queries go to a `storage.explore.Snapshot`
cached per (database version, dataset). A lock conflict never reaches the user as an error:
it becomes a gentle "database busy" notice and an empty result.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from prefsift import storage
from prefsift.dashboard import identity
from prefsift.storage import annotations, audit, diagnose, engine, explore, pair_lists, pairs, training
from prefsift.storage import jobs as jobs_store
from prefsift.storage import runs as runs_store
from prefsift.storage import selections as selections_store
from prefsift.storage.errors import DatabaseLocked, StorageError
from prefsift.storage.paths import exports_dir

TTL = 600  # seconds; the version key already invalidates on every commit


# ---------------------------------------------------------------- where the database is
def db_path() -> Path:
    """`streamlit run dashboard/app.py -- --db X`, else $PREFSIFT_DB, else ./prefsift.duckdb."""
    return Path(identity.script_option("db") or os.environ.get("PREFSIFT_DB") or storage.DEFAULT_DB).resolve()


def _version() -> tuple:
    """The database's version: changes whenever a writer commits (the WAL grows, or a checkpoint
    rewrites the file)."""
    db = db_path()
    out = []
    for p in (db, db.with_name(db.name + ".wal")):
        try:
            s = p.stat()
            out += [s.st_mtime_ns, s.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)


# ---------------------------------------------------------------- reading
def busy_notice() -> None:
    st.info(
        "The database is busy (a job is committing its results); retrying on the next refresh…", icon="⏳"
    )


def _retrying(attempt: Callable, default=None):
    """attempt(), retried a few times while a writer holds the database; then the busy notice and
    `default`: a lock conflict never reaches the user as an error."""
    for i in range(3):
        try:
            return attempt()
        except DatabaseLocked:
            time.sleep(0.2 * (i + 1))
    busy_notice()
    return default


WRITE_BUSY = object()  # what `write` returns when the database stayed busy


# Writes any signed-in person may make (their own decisions on pairs); every other write
# (selections, exports, ...) needs a curator: checked here, where the write happens.
ANNOTATOR_WRITES: set[Callable] = {
    annotations.save_decision,
    annotations.withdraw_decision,
}


def write(fn: Callable, *args, **kwargs):
    """Run fn(con, *args) on a short write connection (annotations, selections, exports).

    The role is checked first (identity.NotAllowed); each write other than a decision (which has
    its own history) is recorded in the audit log with who and when. If another process holds
    the database for the whole retry budget, shows the busy notice and returns WRITE_BUSY (the
    user clicks again), never a lock error."""
    name = getattr(fn, "__name__", str(fn))
    who = identity.require(
        identity.ANNOTATOR if fn in ANNOTATOR_WRITES else identity.CURATOR, name.replace("_", " ")
    )
    try:
        with storage.connect(db_path(), timeout_s=10.0) as con:
            out = fn(con, *args, **kwargs)
            if fn not in ANNOTATOR_WRITES:
                audit.record(con, who.name, who.role, name, {"args": args})
            return out
    except DatabaseLocked:
        busy_notice()
        return WRITE_BUSY


def decide(dataset: str, pair_id: str, *, expected, withdraw: bool = False, **fields):
    """Save (or withdraw: no `fields`) the signed-in person's own decision on a pair, as them, in
    their role."""
    who = identity.require(identity.ANNOTATOR, "annotate pairs")
    fn = annotations.withdraw_decision if withdraw else annotations.save_decision
    return write(fn, dataset, pair_id, who.name, role=who.role, expected=expected, **fields)


@st.cache_data(ttl=TTL, show_spinner=False)
def _cached(name: str, version: tuple, db: str, args: tuple, kwargs: tuple):
    fn = _READS[name]
    with storage.connect(db, read_only=True, timeout_s=5.0) as con:
        return fn(con, *args, **dict(kwargs))


def cached(name: str, *args, default=None, **kwargs):
    """A cached read of one of the storage functions in _READS (keyed by the database version)."""
    db = db_path()
    if not db.exists():
        return default
    return _retrying(lambda: _cached(name, _version(), str(db), args, tuple(sorted(kwargs.items()))), default)


def _overview(con, dataset):
    """Everything the Overview page lists, on one connection (each open costs ~50 ms at 1M pairs)."""
    return {
        "selections": explore.overview_table(con, "selections", dataset),
        "training_runs": explore.overview_table(con, "training_runs", dataset),
        "exports": explore.overview_table(con, "exports", dataset),
        "models": explore.overview_table(con, "models"),
        "latest_runs": runs_store.latest_score_runs(con, dataset),
    }


def _pair_bundle(con, dataset, pair_id):
    """Everything the Pair inspector shows about one pair, on one connection."""
    pair = pairs.get_pair(con, dataset, pair_id) if pair_id else None
    return {
        "pair": pair,
        "neighbours": explore.neighbour_ids(con, dataset, pair_id if pair else None),
        "token_logps": explore.token_logps(con, pair_id) if pair else None,
        "fates": explore.pair_fates(con, dataset, pair_id) if pair else None,
        "annotation": explore.get_annotation(con, dataset, pair_id) if pair else None,
        "decisions": annotations.decisions(con, dataset, pair_id) if pair else None,
        "history": annotations.history(con, dataset, pair_id, limit=50) if pair else None,
        "models": explore.overview_table(con, "models"),
    }


def _experiments(con, dataset):
    """The `prefsift experiment` results of a dataset (diagnostics `experiment:<name>`), by name."""
    df = runs_store.get_diagnostics(con)
    out = []
    for _run_id, g in df[df["run_id"].str.startswith("experiment:")].groupby("run_id", sort=True):
        summary = json.loads(g["detail"].iloc[0] or "{}").get("summary")  # a JSON column
        if summary and summary.get("dataset") == dataset:
            out.append(summary)
    return out


_READS: dict[str, Callable] = {
    "overview": _overview,
    "pair_bundle": _pair_bundle,
    "datasets": pairs.list_datasets,
    "score_runs": explore.score_runs,
    "latest_runs": runs_store.latest_score_runs,
    "overview_table": explore.overview_table,
    "jobs": jobs_store.list_jobs,
    "selections": selections_store.list_selections,
    "ledger": training.ledger,
    "model_roles": runs_store.model_roles,
    "neighbours": explore.neighbour_ids,
    "history": annotations.history,
    "agreement": annotations.agreement,
    "conflicts": annotations.conflicts,
    "status_counts": annotations.status_counts,
    "annotator_counts": annotations.annotator_counts,
    "review_queue": annotations.review_queue,
    "previews": explore.previews,
    "selection_ids": selections_store.member_ids,
    "forced": engine.forced_annotations,
    "experiments": _experiments,
    "diagnose": diagnose.diagnose,
}


# ---------------------------------------------------------------- the snapshot
@st.cache_resource(max_entries=2, show_spinner=False)
def _snapshot(db: str, version: tuple, dataset: str) -> explore.Snapshot:
    with storage.connect(db, read_only=True, timeout_s=5.0) as con:
        return explore.Snapshot(con, dataset)


def snapshot(dataset: str, runs: list[str] = (), text: str | None = None) -> explore.Snapshot | None:
    """The dataset's snapshot with `runs` (and a text search) loaded; None while the db is busy."""
    db = db_path()

    def attempt() -> explore.Snapshot:
        snap = _snapshot(str(db), _version(), dataset)
        need = [r for r in runs if not snap.has_run(r)]
        if need or (text and not snap.has_text(text)):
            with st.spinner("Loading scores…"), storage.connect(db, read_only=True, timeout_s=5.0) as con:
                for r in need:
                    snap.load_run(con, r)
                if text:
                    snap.load_text(con, text)
        return snap

    return _retrying(attempt)


_SNAP_METHODS = {
    "histogram",
    "scatter_sample",
    "bins_2d",
    "count",
    "page",
    "disagreements",
    "rank_correlation",
    "presence",
}
_SNAP_FUNCTIONS = {
    "tune": explore.tune,
    "verdict_flips": explore.verdict_flips,
    "list_position": pair_lists.query_position,
}


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=512)
def _snap_call(db: str, version: tuple, dataset: str, method: str, args: tuple, kwargs: tuple):
    if method not in _SNAP_FUNCTIONS and method not in _SNAP_METHODS:
        raise ValueError(f"not a snapshot query: {method!r}")
    snap = _snapshot(db, version, dataset)
    for _ in range(32):
        try:
            if method in _SNAP_FUNCTIONS:
                return _SNAP_FUNCTIONS[method](snap, *args, **dict(kwargs))
            return getattr(snap, method)(*args, **dict(kwargs))
        except explore.NotLoaded as missing:
            # A job committed between the page's `snapshot()` and this query, so the version moved
            # and this is a fresh snapshot: load what the query needs, then ask again.
            with storage.connect(db, read_only=True, timeout_s=5.0) as con:
                load = snap.load_run if missing.what == "run" else snap.load_text
                load(con, missing.key)
    raise RuntimeError(f"snapshot query {method!r} kept asking for more runs")


def sq(dataset: str, method: str, *args, **kwargs):
    """A cached snapshot query (call `snapshot(dataset, runs)` first so the runs are loaded):
    a rerun that does not change a query's parameters costs nothing."""
    return _snap_call(str(db_path()), _version(), dataset, method, args, tuple(sorted(kwargs.items())))


def with_previews(dataset: str, df: pd.DataFrame, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """`df`'s rows (pair_id, rid) with their pairs' shortened texts (all, or those of `columns`)
    in place of rid."""
    prev = cached(
        "previews",
        dataset,
        tuple(df["pair_id"]),
        100,
        tuple(df["rid"]),
        default=pd.DataFrame(columns=["pair_id"]),
    )
    if columns is not None:
        prev = prev[["pair_id", *(c for c in columns if c in prev)]]
    return df.merge(prev, on="pair_id", how="left").drop(columns=["rid"])


def selection_mask(snap: explore.Snapshot, name: str) -> np.ndarray:
    ids = cached("selection_ids", name, default=[])
    return snap.load_ids(("selection", name, _version()), ids)


# ---------------------------------------------------------------- Tune's rule, shared with Explore
TUNE_METRICS = (("lossdiff", True), ("irm", True), ("if", False))  # (metric, used by default)


def tune_rule(runs: pd.DataFrame) -> list[tuple[str, str, tuple[float, float]]]:
    """The rule of the Tune page as (metric, run_id, (lo_pct, hi_pct)) parts: what the person chose
    there in this session, else the page's defaults (the newest LossDiff and IRM runs, 10–90)."""
    ids = set(runs["run_id"])
    parts = st.session_state.get("tune_parts")
    if parts is not None:
        return [(m, r, tuple(b)) for m, r, b in parts if r in ids]
    bands = st.session_state.get("tune_bands", {})
    return [
        (metric, run, tuple(bands.get(metric, (10.0, 90.0))))
        for metric, on in TUNE_METRICS
        if on and (run := default_run(runs, metric))
    ]


def rule_text(rule) -> str:
    """The rule text of Tune's parts: what Tune evaluates, shows and saves."""
    return " & ".join(f"{metric}:{b[0]:g}-{b[1]:g}" for metric, _, b in rule)


def evaluate_rule(dataset: str, rule, compare: dict | None = None, hist_bins: int = 40) -> dict:
    """The one evaluation behind Tune's numbers and Explore's bands: the engine (storage.explore.tune)
    on the train split with the annotations' forced keep/drop (load the rule's runs first)."""
    forced = cached("forced", dataset, default=None) or None
    runs = {metric: run for metric, run, _ in rule}
    return sq(dataset, "tune", rule_text(rule), runs, "train", forced, hist_bins, compare)


def rule_regions(snap: explore.Snapshot, pair_ids, kept: np.ndarray, split: str = "train") -> np.ndarray:
    """'kept', 'dropped' or 'not in the train split' for each of `pair_ids`, by a rule's kept mask."""
    pos = snap.positions(snap.hash_ids(list(pair_ids)))
    pool = snap.split_mask(split)
    return np.where(~pool[pos], f"not in the {split} split", np.where(kept[pos], "kept", "dropped"))


# ---------------------------------------------------------------- dataset and runs of this session
def datasets() -> pd.DataFrame | None:
    """The datasets table; None while the database is busy (the notice is shown)."""
    return cached("datasets", default=None)


def current_dataset() -> str | None:
    """The dataset picked in the sidebar (query parameter `dataset` wins, for deep links)."""
    return st.session_state.get("app_dataset")


def runs_table(dataset: str) -> pd.DataFrame:
    df = cached("score_runs", dataset, default=None)
    return df if df is not None else pd.DataFrame(columns=["run_id", "metric", "policy", "label", "n_pairs"])


def default_run(runs: pd.DataFrame, metric: str, policy: str | None = None) -> str | None:
    """The newest run of a metric under a policy; with none given, the run `prefsift select` reads
    by default (storage.runs.latest_score_runs: one policy and beta), else the newest."""
    if policy is None and (ds := current_dataset()):
        latest = cached("latest_runs", ds, default=None) or {}
        if latest.get(metric) in set(runs["run_id"]):
            return latest[metric]
    df = runs[runs["metric"] == metric]
    if policy is not None:
        df = df[df["policy"] == policy]
    return None if df.empty else str(df["run_id"].iloc[-1])


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    return dict(zip(runs["run_id"], runs["label"]))


# ---------------------------------------------------------------- jobs
def start_job(argv: list[str]) -> dict:
    """`prefsift jobs start --db DB -- ARGV...` as a subprocess (arguments as a list, no shell).

    Jobs other than ANNOTATOR_JOBS need a curator (identity.NotAllowed); each start is recorded
    in the audit log, and the job runs with PREFSIFT_USER set to the person who started it."""
    kind = argv[0] if argv else ""
    who = identity.require(
        identity.ANNOTATOR if kind in ANNOTATOR_JOBS else identity.CURATOR, f"start {kind or 'a'} job"
    )
    job = _prefsift_json(
        ["jobs", "start", "--db", str(db_path()), "--json", "--", *argv],
        timeout=60,
        env={**os.environ, "PREFSIFT_USER": who.name},
    )
    with contextlib.suppress(StorageError):  # the job runs; a busy database only loses the audit row
        with storage.connect(db_path(), timeout_s=10.0) as con:
            audit.record(
                con, who.name, who.role, f"start job {kind}", {"argv": argv, "job_id": job.get("job_id")}
            )
    return job


ANNOTATOR_JOBS = {"explain-pair"}  # jobs an annotator may start: computing one pair's token view


def _prefsift_json(argv: list[str], timeout: int, env: dict | None = None) -> dict:
    """`python -m prefsift ARGV`: the JSON object it prints; on failure, its last line as the error."""
    out = subprocess.run(
        [sys.executable, "-m", "prefsift", *argv], capture_output=True, text=True, timeout=timeout, env=env
    )
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"`prefsift {argv[0]}` failed")
    text = out.stdout.strip()
    return json.loads(text[text.index("{") :])


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=32)
def _cli_json(db: str, version: tuple, argv: tuple) -> dict:
    return _prefsift_json([*argv, "--db", db, "--json"], timeout=300)


def cli_json(argv: list[str], inputs: tuple | None = None) -> dict:
    """A short read-only `prefsift ARGV --json` (e.g. `diagnose`, whose intervals are computed by
    the application's maths, which the dashboard may not import), cached by the database version,
    or by `inputs` (what the answer depends on) so that a job's commits do not rerun it."""
    return _cli_json(str(db_path()), _version() if inputs is None else inputs, tuple(argv))


def latest_job(kind: str, *argv_has: str) -> dict | None:
    """The newest job of `kind` whose arguments include every one of `argv_has`, or None."""
    jobs = cached("jobs", limit=50)
    if jobs is None or jobs.empty:
        return None
    for row in jobs[jobs["kind"] == kind].to_dict("records"):
        argv = json.loads(row["argv"] or "[]")  # a JSON column, as storage.jobs.get_job reads it
        if all(a in argv for a in argv_has):
            return {**row, "argv": argv}
    return None


def job_status(path: str | None) -> dict:
    try:
        return json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def log_tail(path: str | None, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def export_path(name: str, fmt: str) -> Path:
    """Where the dashboard exports a selection: always inside `<db stem>.prefsift/exports/`.

    The name follows the one selection-name rule (storage.selections.check_name), so every
    selection that could be saved can be exported; each error names the real problem."""
    try:
        selections_store.check_name(name)
    except StorageError as exc:
        raise ValueError(str(exc)) from None
    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"cannot export as {fmt!r}: the formats are parquet and jsonl")
    root = exports_dir(db_path()).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = (root / f"{name}-{stamp}.{fmt}").resolve()
    if root not in path.parents:
        raise ValueError("export path escapes the exports folder")
    return path


ERRORS = (StorageError, ValueError, identity.NotAllowed)  # what a page shows as "could not …"


# ---------------------------------------------------------------- on the page
def show_table(df: pd.DataFrame | None, empty: str | None = None, **kwargs):
    """A table as every page shows one: the page's width, no index column; with `empty`, that
    caption instead while there is no row (what to do to get some)."""
    if empty is not None and (df is None or df.empty):
        return st.caption(empty)
    return st.dataframe(df, hide_index=True, width="stretch", **kwargs)


# ---------------------------------------------------------------- empty states
def require_dataset() -> str:
    """The current dataset, or an explanation of how to get one (and stop the page)."""
    db = db_path()
    if db.exists() and datasets() is None:
        st.stop()  # busy: the notice is on the page; the next rerun retries
    ds = current_dataset()
    if not db.exists() or not ds:
        st.info(
            f"No preference data in `{db}` yet. Ingest a JSONL/Parquet file of pairs "
            "(prompt, chosen, rejected) first:\n\n"
            f"```\nprefsift ingest pairs.jsonl --name mydata --db {db}\n```\n"
            "then reload this page."
        )
        st.stop()
    return ds


def require_runs(dataset: str) -> pd.DataFrame:
    """The dataset's score runs, or how to compute them (and stop the page)."""
    runs = runs_table(dataset)
    if runs.empty:
        st.info(
            f"Dataset **{dataset}** has no scores yet. Start scoring from the Overview page, or run\n\n"
            f"```\nprefsift score --dataset {dataset} --db {db_path()}\n```\n"
            "(IRM and LossDiff need a warmed-up policy θ and a validation model: `prefsift warmup`, "
            "`prefsift fit-val`)."
        )
        st.stop()
    return runs


def pair_link(pair_id: str, dataset: str, base: str | None = None) -> str:
    """A deep link to the pair inspector: absolute when the app's URL is known (`base`, e.g.
    `st.context.url`, a page's URL), so it can be pasted to a colleague; else relative."""
    from urllib.parse import urlencode

    query = urlencode({"pair": pair_id, "dataset": dataset})
    if base:
        root = base.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        page = root.rsplit("/", 1)[-1]
        if page in {path for path, _, _ in PAGES}:  # the URL of a page: the app lives one level up
            root = root[: -len(page) - 1]
        return f"{root}/inspector?{query}"
    return "./inspector?" + query


# The pages: (URL path and file under views/, title, icon), in the menu's order (app.py).
PAGES = (
    ("overview", "Overview", ":material/dashboard:"),
    ("explore", "Explore", ":material/scatter_plot:"),
    ("disagreements", "Disagreements", ":material/compare_arrows:"),
    ("inspector", "Pair inspector", ":material/search:"),
    ("team", "Team review", ":material/groups:"),
    ("tune", "Tune & select", ":material/tune:"),
    ("export_train", "Export & train", ":material/model_training:"),
    ("compare", "Compare models", ":material/balance:"),
    ("evidence", "Evidence", ":material/science:"),
)
