"""Training data for prefsift.train: pairs of a split or a selection from DuckDB, or an exported file.

Rows come out as TRL expects them: prompt/chosen/rejected strings (standard) or lists of
{role, content} messages (conversational), plus a content hash that keys the training run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefsift.errors import UserError
from prefsift.formats import pair_texts


def load_rows(db, dataset: str | None, split: str | None, selection: str | None, data_file: str | None):
    """(rows as dicts with prompt/chosen/rejected, content hash, dataset name)."""
    if data_file:
        return _rows_from_file(data_file) + (dataset,)
    from prefsift.storage import connect
    from prefsift.storage import pairs as pstore
    from prefsift.storage import selections as sstore

    with connect(db) as con:
        ids = None
        if selection:
            sel_dataset = sstore.get_selection(con, selection)["dataset"]
            ids = sstore.member_ids(con, selection)
            if dataset and dataset != sel_dataset:
                raise UserError(
                    f"selection {selection!r} belongs to dataset {sel_dataset!r}, not {dataset!r}"
                )
            dataset = sel_dataset
            if not ids:
                raise UserError(f"selection {selection!r} is empty: nothing to train on")
        if not dataset:
            raise UserError("pass --dataset (or --selection / --data)")
        table = pstore.get_pairs(
            con,
            dataset,
            split=None if selection else split,
            pair_ids=ids,
            columns=("pair_id", "kind", "prompt", "chosen", "rejected"),
        )
    if table.num_rows == 0:
        where = f"selection {selection!r}" if selection else f"split {split!r} of dataset {dataset!r}"
        hint = " (run `prefsift split` first?)" if split == "val" else ""
        raise UserError(f"no pairs in {where}{hint}")
    ids_sorted = sorted(table.column("pair_id").to_pylist())
    digest = hashlib.md5(",".join(ids_sorted).encode()).hexdigest()
    rows = [pair_texts(r) for r in table.to_pylist()]
    return rows, digest, dataset


def _rows_from_file(path: str):
    p = Path(path)
    if not p.exists():
        raise UserError(f"data file {p} not found")
    import pandas as pd

    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    elif p.suffix in (".jsonl", ".json") or p.name.endswith(".jsonl.gz"):
        df = pd.read_json(p, lines=p.suffix != ".json" or p.name.endswith(".jsonl.gz"))
    else:
        raise UserError(f"--data must be .parquet or .jsonl, got {p.name}")
    missing = {"prompt", "chosen", "rejected"} - set(df.columns)
    if missing:
        raise UserError(f"{p.name} lacks column(s) {sorted(missing)}")
    if df.empty:
        raise UserError(f"{p.name} holds no pairs")
    records = df[["prompt", "chosen", "rejected"]].to_dict(orient="records")
    rows = [{k: v if isinstance(v, str) else list(v) for k, v in r.items()} for r in records]
    return rows, hashlib.sha256(p.read_bytes()).hexdigest()[:32]


def check_chat_template(rows: list[dict], tokenizer) -> None:
    if rows and not isinstance(rows[0]["chosen"], str) and not getattr(tokenizer, "chat_template", None):
        raise UserError("the data is conversational but the model's tokenizer has no chat template")


def prompt_boundary_note(rows: list[dict], tokenized: list) -> str | None:
    """prefsift's words for TRL's "The tokenized prompt is not a prefix of the tokenized
    prompt+completion" warning, with the fix, when any pair trips it (else None). `tokenized`:
    `scoring.tokenize.tokenize_pairs(tokenizer, rows, ...)`, which finds the prefix as TRL does."""
    cut = [i for i, t in enumerate(tokenized) if t.prompt_cut]
    if not cut:
        return None
    first = rows[cut[0]]
    if isinstance(first["prompt"], str):
        where = f"e.g. {first['prompt'][-30:]!r} + {first['chosen'][:30]!r}"
        fix = (
            "for an instruct/chat model, ingest the data with --chat (its chat template then marks the "
            "turns); for a base model, end each prompt with a newline"
        )
    else:
        where = "the chat template renders the prompt alone differently from prompt+answer"
        fix = "use a chat template that renders the prompt the same way in both"
    return (
        f"{len(cut):,} of {len(rows):,} pairs: the prompt's last tokens merge with the answer when "
        f"tokenized together ({where}), so the model would be trained on a context that differs from "
        "the one it sees at inference (TRL warns: 'The tokenized prompt is not a prefix of the "
        f"tokenized prompt+completion'). Fix: {fix}"
    )
