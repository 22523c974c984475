"""Ingest any preference source into a named dataset: read -> normalise -> validate -> store.

Streaming in batches: memory does not grow with the file. Every row ends up either as a pair
(idempotent: its id is a content hash) or in the quarantine table with its row number, field
and reason. Each batch is written in its own short connection, so the database stays
available to readers between batches; re-running an interrupted ingest completes it.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
from pathlib import Path

import pyarrow as pa

from prefsift.errors import UserError
from prefsift.formats import (
    DEFAULT_MAX_CHARS,
    FORMATS,
    Bad,
    ColumnMap,
    as_chat,
    glued_boundary,
    normalise,
    vote_format,
)
from prefsift.progress import Progress
from prefsift.sources import RawError, SourceBroken, read_rows, source_kind
from prefsift.storage import connect
from prefsift.storage import pairs as pairs_store

log = logging.getLogger(__name__)

BATCH_ROWS = 50_000
HEAD_ROWS = 200  # rows that vote on the format


def _flush(db, name: str, good: list, bad: list, before=None) -> int:
    """Write one batch in one short connection; `before(con)` runs first in the same connection."""
    added = 0
    with connect(db) as con:
        if before is not None:
            before(con)
        if good:
            table = pa.Table.from_pylist(good, schema=pairs_store.PAIR_SCHEMA)
            added = pairs_store.insert_pairs(con, name, table)
        if bad:
            pairs_store.insert_quarantine(
                con, name, pa.Table.from_pylist(bad, schema=pairs_store.QUARANTINE_SCHEMA)
            )
    good.clear()
    bad.clear()
    return added


def _safe(s: str | None) -> str | None:
    """Text that can always be stored: lone surrogates become backslash escapes."""
    return None if s is None else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _raw_preview(row) -> str:
    try:
        return _safe(json.dumps(row, ensure_ascii=False, default=str)[:2000])
    except (TypeError, ValueError, RecursionError):
        return _safe(repr(row)[:2000])


def ingest(
    source: str | Path,
    name: str,
    db: str | Path | None = None,
    split: str = "train",
    fmt: str | None = None,
    column_map: ColumnMap | None = None,
    hub_split: str = "train",
    hub_config: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    limit: int | None = None,
    chat: bool = False,
) -> dict:
    """Ingest `source` into dataset `name`. Returns a summary with counts per reason."""
    source = str(source)
    if split not in pairs_store.SPLITS:
        raise UserError(f"--split must be one of {', '.join(pairs_store.SPLITS)}, got {split!r}")
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(f"dataset name {name!r}: use letters, digits, '-', '_' or '.'")
    kind = source_kind(source)
    cmap = column_map or ColumnMap()
    broken: list[SourceBroken] = []
    rows = _until_broken(read_rows(source, hub_split=hub_split, hub_config=hub_config), broken)
    # Decide the format once, by a majority over the first rows, so that one odd row at the top
    # cannot make the whole file be read in another format (rows are then checked against it).
    head = list(itertools.islice(rows, HEAD_ROWS))
    if fmt is None:
        fmt, cmap = vote_format([r for _, r in head if isinstance(r, dict)], cmap)
    rows = itertools.chain(head, rows)
    detected = fmt
    src_label = Path(source).name if kind != "hub" else source

    good: list[dict] = []
    bad: list[dict] = []
    reasons: collections.Counter = collections.Counter()
    n_read = n_valid = n_added = n_glued = 0
    stored_kind = None
    first_flush = [True]

    def clear_old_quarantine(con) -> None:
        if first_flush[0]:
            pairs_store.clear_quarantine(con, name, src_label)
            first_flush[0] = False

    def quarantine(row_idx: int, why: Bad, raw: str) -> None:
        reasons[why.reason] += 1
        row = {"source": src_label, "row_idx": row_idx, "field": why.field, "reason": why.reason}
        bad.append({**row, "detail": _safe(why.detail), "raw": raw})

    with Progress(None, f"ingest {src_label}", unit="row") as progress:
        for i, row in rows:
            if limit is not None and n_read >= limit:
                break
            n_read += 1
            if isinstance(row, RawError):
                result: Bad | object = Bad("", row.reason, row.detail)
                raw = row.raw
            elif detected is None:
                result, raw = Bad("", "unrecognised row", f"columns {sorted(map(str, row))[:10]}"), None
            else:
                result = normalise(row, detected, cmap, max_chars)
                if chat and not isinstance(result, Bad):
                    result = as_chat(result)
                raw = None
            if isinstance(result, Bad):
                quarantine(i, result, _safe(raw) if raw is not None else _raw_preview(row))
            else:
                n_valid += 1
                stored_kind = stored_kind or result.kind
                if result.kind == "standard" and (
                    glued_boundary(result.prompt, result.chosen)
                    or glued_boundary(result.prompt, result.rejected)
                ):
                    n_glued += 1
                good.append({**vars(result), "row_idx": i, "split": split})
            if len(good) + len(bad) >= BATCH_ROWS:
                n_added += _flush(db, name, good, bad, before=clear_old_quarantine)
                progress.update(BATCH_ROWS)
        if broken and (limit is None or broken[0].row < limit):
            if n_read == 0:
                raise UserError(f"{broken[0]}; nothing ingested") from broken[0]
            quarantine(broken[0].row, Bad("", "file breaks off", broken[0].reason), "")
        else:
            broken.clear()
        if n_read == 0:
            raise UserError(f"{source}: no rows found")
        config = {"format": detected, "column_map": vars(cmap)}

        def finish(con) -> None:
            clear_old_quarantine(con)
            pairs_store.upsert_dataset(con, name, source, stored_kind or "standard", config)

        n_added += _flush(db, name, good, bad, before=finish)
        progress.update(n_read - progress.done)
    summary = {
        "dataset": name,
        "source": source,
        "format": detected,
        "split": split,
        "rows_read": n_read,
        "valid": n_valid,
        "added": n_added,
        "duplicates_or_existing": n_valid - n_added,
        "quarantined": sum(reasons.values()),
        "quarantine_reasons": dict(reasons.most_common()),
        "glued_boundary": n_glued,
    }
    summary["_exit"] = 0 if n_valid > 0 else 1
    if broken:
        # Keep what was read: those rows were validated like any others, batches are written as
        # the file streams, and a pair's id is its content hash, so ingesting the complete file
        # later adds exactly the missing rows (and clears this break from quarantine).
        br = broken[0]
        exc = UserError(
            f"{br}; kept the {n_read:,} rows before it ({n_added:,} pairs added, "
            f"{summary['quarantined'] - 1:,} quarantined) and recorded the break in quarantine; "
            f"the rest is missing: ingest the complete file again to add it (stored pairs are not added twice)"
        )
        exc.summary = summary
        raise exc from br
    return summary


def glued_note(n: int, total: int) -> str:
    """prefsift's words for TRL's "The tokenized prompt is not a prefix of the tokenized
    prompt+completion" warning, found in the text before any model is loaded."""
    return (
        f"{n:,} of {total:,} plain-text pairs join prompt and response without a clean boundary "
        "(a word glued to a word, or a prompt ending in a space): tokenizers merge tokens across "
        "it, so training would see a context that differs from the one the model sees at "
        "inference (TRL warns 'The tokenized prompt is not a prefix of the tokenized "
        "prompt+completion'). Fix: for an instruct/chat model, ingest with --chat (its chat template "
        "then marks the turns); for a base model, end each prompt with a newline"
    )


def _until_broken(rows, broken: list):
    """The rows up to a break in the file; the `SourceBroken` is appended to `broken`."""
    try:
        yield from rows
    except SourceBroken as exc:
        broken.append(exc)
