"""TRL-ready export of a selection: DuckDB `COPY (...) TO` Parquet or JSON Lines + a manifest.

Rows follow TRL's preference formats: standard pairs as `prompt`, `chosen`, `rejected`
strings; conversational pairs as lists of `{role, content}` messages (parsed back from the
stored JSON, so Parquet holds list<struct<role, content>> and JSONL holds arrays of objects).
A `pair_id` column rides along for traceability (TRL ignores extra columns). Rows are in the
dataset's order (row_idx, pair_id), so the same selection always gives the same bytes.

Only Parquet and JSONL: no CSV, so no text can turn into a spreadsheet formula on opening.

The file is written beside its target under a temporary name and renamed into place, then
the manifest `PATH.manifest.json` (rule, resolved thresholds, score runs + configs, models,
counts, sha256, time, version) is written the same way, and the export is recorded in
`exports`. An existing file is never overwritten unless `force=True`. Callers that take a
path from a UI must confine it themselves (the dashboard writes under its exports folder).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from pathlib import Path

import duckdb

from prefsift.storage.annotations import local_user
from prefsift.storage.db import lit
from prefsift.storage.errors import StorageError
from prefsift.storage.selections import get_selection, member_ids, members_relation

FORMATS = ("parquet", "jsonl")
MESSAGES = """'[{"role": "VARCHAR", "content": "VARCHAR"}]'"""


class ExportError(StorageError):
    """An export that cannot be written (file exists, mixed kinds, bad format)."""


def manifest_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".manifest.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("prefsift")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        return "unknown"


def _strings(obj) -> set[str]:
    """Every string inside nested dicts and lists."""
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list):
        return set().union(*map(_strings, obj))
    return {obj} if isinstance(obj, str) else set()


def _provenance(con: duckdb.DuckDBPyConnection, runs: dict) -> tuple[dict, list]:
    """Each score run with its config, and every registered model those configs mention."""
    out = {}
    for metric, run_id in runs.items():
        row = con.execute("SELECT config, created_at FROM score_runs WHERE run_id = ?", [run_id]).fetchone()
        cfg = json.loads(row[0] or "{}") if row else None
        out[metric] = {"run_id": run_id, "config": cfg, "created_at": str(row[1]) if row else None}
    # Configs name their models by fingerprint (or name); logp runs by id: follow both.
    refs = _strings([v["config"] for v in out.values()])
    refs |= {
        r[0]
        for r in con.execute(
            "SELECT model_id FROM logp_runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [sorted(refs)]
        ).fetchall()
    }
    models = con.execute(
        "SELECT model_id, name, role, path, revision, adapter_path FROM models "
        "WHERE model_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY model_id",
        [sorted(refs)],
    ).df()
    return out, models.to_dict(orient="records")


def _fully_truncated_members(
    con: duckdb.DuckDBPyConnection, selection: str, dataset: str, runs: dict
) -> list[str]:
    """Members of the selection that are fully truncated (the prompt fills max_length) under the
    tokenization of the runs the selection read, or, for a rule that reads no score (random), of
    the dataset's default runs. The engine never keeps them; a selection saved from a member list
    (or before the engine left them out) can hold them."""
    from prefsift.storage.runs import fully_truncated_pairs, latest_score_runs, logp_runs_of

    drop = set(fully_truncated_pairs(con, logp_runs_of(con, runs or latest_score_runs(con, dataset))))
    return [p for p in member_ids(con, selection) if p in drop] if drop else []


def export_selection(
    con: duckdb.DuckDBPyConnection,
    selection: str,
    path: str | os.PathLike,
    fmt: str | None = None,
    force: bool = False,
    extra: dict | None = None,
) -> dict:
    """Write the selection's pairs to `path` (parquet | jsonl, default from the suffix) and
    its manifest beside it; returns the manifest."""
    path = Path(path)
    if fmt is None:
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "parquet"
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)}; CSV is not offered)")
    man_path = manifest_path(path)
    for p in (path, man_path):
        if p.exists() and not force:
            raise ExportError(f"{p} exists (pass --force to overwrite it)")
        if p.is_dir():
            raise ExportError(f"{p} is a directory")
    sel = get_selection(con, selection)
    dataset = sel["dataset"]
    dropped = _fully_truncated_members(con, selection, dataset, sel["score_runs"])
    members = members_relation(selection)
    left_out = f"(SELECT unnest([{', '.join(lit(p) for p in dropped)}]::VARCHAR[]))"
    base = f"FROM pairs p WHERE p.dataset = {lit(dataset)} AND p.pair_id IN {members} AND p.pair_id NOT IN {left_out}"
    lo_kind, hi_kind = con.execute(f"SELECT min(p.kind), max(p.kind) {base}").fetchall()[0]
    if lo_kind != hi_kind:
        raise ExportError(
            f"selection {selection!r} mixes {lo_kind} and {hi_kind} pairs: TRL needs one format"
        )
    kind = lo_kind or "standard"
    # Pairs whose effective decision (storage/annotations.py) says the labels are swapped are
    # written corrected: chosen and rejected exchanged. The manifest lists them.
    swapped = [
        r[0]
        for r in con.execute(
            f"SELECT p.pair_id FROM annotations a JOIN pairs p ON p.dataset = a.dataset AND p.pair_id = a.pair_id "
            f"WHERE a.dataset = {lit(dataset)} AND a.swapped AND p.pair_id IN {members} "
            f"AND p.pair_id NOT IN {left_out} ORDER BY p.row_idx, p.pair_id"
        ).fetchall()
    ]
    is_swapped = f"p.pair_id IN (SELECT unnest([{', '.join(lit(p) for p in swapped)}]::VARCHAR[]))"
    side = {
        "prompt": "p.prompt",
        "chosen": f"CASE WHEN {is_swapped} THEN p.rejected ELSE p.chosen END",
        "rejected": f"CASE WHEN {is_swapped} THEN p.chosen ELSE p.rejected END",
    }
    conv = kind == "conversational"
    cols = ", ".join(f"from_json({v}, {MESSAGES}) AS {c}" if conv else f"{v} AS {c}" for c, v in side.items())
    query = f"SELECT {cols}, p.pair_id {base} ORDER BY p.row_idx, p.pair_id"

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    # Snappy (DuckDB's default): zstd halves the file but costs ~50% more CPU at 1M pairs.
    options = "(FORMAT parquet)" if fmt == "parquet" else "(FORMAT json)"
    try:
        n_rows = con.execute(f"COPY ({query}) TO {lit(str(tmp))} {options}").fetchall()[0][0]
        digest = _sha256(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    runs, models = _provenance(con, sel["score_runs"])
    manifest = {
        "file": path.name,
        "path": str(path.resolve()),
        "format": fmt,
        "kind": kind,
        "columns": ["prompt", "chosen", "rejected", "pair_id"],
        "rows": int(n_rows),
        "bytes": int(size),
        "sha256": digest,
        "selection": selection,
        "dataset": dataset,
        "split": sel["split"],
        "rule": sel["rule"],
        "rule_text": sel["rule_text"],
        "resolved": sel["resolved"],
        "counts": {"n_kept": sel["n_kept"], "n_total": sel["n_total"], "fraction": sel["fraction"]},
        # members with no response token under the scores' tokenization: TRL would drop them
        "fully_truncated_left_out": {"n": len(dropped), "pair_ids": dropped},
        # chosen and rejected exchanged in the file: annotators' effective decision "labels swapped"
        "labels_swapped_corrected": {
            "n": len(swapped),
            "pair_ids": swapped,
            "policy": "effective decision per pair (storage/annotations.py): curators' decisions win, "
            "else the annotators' when they agree; pairs in conflict are written as stored",
        },
        "score_runs": runs,
        "models": models,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "prefsift_version": _version(),
        "exported_by": local_user(),  # the dashboard passes the signed-in person in `extra`
        **(extra or {}),
    }
    tmp_m = man_path.with_name(f".{man_path.name}.tmp-{os.getpid()}")
    tmp_m.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp_m, man_path)
    export_id = hashlib.sha256(f"{manifest['path']}|{digest}|{manifest['created_at']}".encode()).hexdigest()[
        :16
    ]
    con.execute(
        "INSERT INTO exports (export_id, selection, path, format, n_rows, sha256, manifest) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (export_id) DO UPDATE SET manifest = excluded.manifest",
        [export_id, selection, manifest["path"], fmt, int(n_rows), digest, json.dumps(manifest, default=str)],
    )
    return {**manifest, "export_id": export_id, "manifest_path": str(man_path)}
