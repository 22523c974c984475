"""The audit log: who did what from the dashboard (selections saved, exports, jobs started) and when.

Decisions on pairs have their own, finer history (storage/annotations.py); this log covers every
other write a person makes through the dashboard.
"""

from __future__ import annotations

import json

import duckdb


def _plain(obj):
    """Arguments as JSON-able values (a rule object or a path becomes its text), each kept short."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    text = obj.to_text() if hasattr(obj, "to_text") else str(obj)
    return text if len(text) <= 300 else text[:300] + "…"


def record(
    con: duckdb.DuckDBPyConnection, who: str, role: str | None, action: str, detail: dict | None = None
) -> None:
    if not who:
        raise ValueError(f"audit record of {action!r}: field 'who' is empty")
    con.execute(
        "INSERT INTO audit_log (saved_at, who, role, action, detail) VALUES (now()::TIMESTAMP, ?, ?, ?, ?)",
        [who, role, action, json.dumps(_plain(detail or {}))],
    )
