"""Read raw rows from any source, streaming: local .jsonl/.json/.parquet/.csv (each optionally
.gz) or a Hugging Face hub dataset.

Every reader yields `(row_number, row_or_error)`: a dict for a readable row, or a
`RawError(reason, detail, raw)` for a row that cannot even be parsed (malformed JSON, invalid
UTF-8). Row numbers are 0-based positions in the source, so quarantine rows point back to
the input. Memory stays flat: nothing reads a whole file at once.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefsift.errors import UserError

RAW_PREVIEW = 2000  # characters of a bad row kept in quarantine


@dataclass(frozen=True)
class RawError:
    reason: str
    detail: str
    raw: str


Row = tuple[int, "dict | RawError"]

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def source_kind(source: str) -> str:
    """'jsonl' | 'json' | 'parquet' | 'csv' for local files, 'hub' otherwise."""
    name = source.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suf in LOCAL_SUFFIXES:
        if name.endswith(suf):
            if not Path(source).exists():
                raise UserError(f"no such file: {source}")
            return suf[1:]
    if Path(source).exists():
        raise UserError(
            f"{source}: unsupported file type (use .jsonl, .json, .parquet or .csv, optionally .gz)"
        )
    return "hub"


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _preview(b: bytes | str) -> str:
    if isinstance(b, bytes):
        b = b.decode("utf-8", errors="replace")
    return b[:RAW_PREVIEW]


def read_jsonl(path: str) -> Iterator[Row]:
    with _open_binary(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8-sig")  # a BOM (Windows editors) is not data
            except UnicodeDecodeError as exc:
                yield i, RawError("undecodable text", f"invalid UTF-8 at byte {exc.start}", _preview(line))
                continue
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                yield i, RawError("malformed JSON", str(exc)[:200], _preview(text))
                continue
            if not isinstance(obj, dict):
                yield (
                    i,
                    RawError(
                        "wrong type", f"row is a JSON {type(obj).__name__}, not an object", _preview(text)
                    ),
                )
                continue
            yield i, obj


def read_json(path: str, chunk_chars: int = 1 << 20) -> Iterator[Row]:
    """A JSON array of objects, decoded element by element (or JSON Lines saved as .json)."""
    with _open_binary(path) as fb:
        head = fb.read(4096)
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    if first != b"[":
        yield from read_jsonl(path)
        return
    decoder = json.JSONDecoder()
    with _open_binary(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="strict")
        buf, pos, i, done = "", 0, 0, False
        try:
            buf = f.read(chunk_chars)
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: invalid UTF-8 ({exc}); a JSON array cannot be split into rows") from exc
        pos = buf.index("[") + 1
        while True:
            # skip whitespace and commas between elements
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf) or done:
                    break
                more = f.read(chunk_chars)
                if not more:
                    done = True
                buf, pos = buf[pos:] + more, 0
            if pos >= len(buf) or buf[pos] == "]":
                return
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except (json.JSONDecodeError, RecursionError) as exc:  # deep nesting: refuse cleanly
                if not done:
                    more = f.read(chunk_chars)
                    if more:
                        buf, pos = buf[pos:] + more, 0
                        continue
                    done = True
                    continue
                raise UserError(f"{path}: malformed JSON array near element {i}: {exc}") from exc
            if isinstance(obj, dict):
                yield i, obj
            else:
                yield (
                    i,
                    RawError(
                        "wrong type", f"element is a JSON {type(obj).__name__}", _preview(json.dumps(obj))
                    ),
                )
            i += 1
            pos = end
            if pos > chunk_chars:
                buf, pos = buf[pos:], 0


def read_parquet(path: str, batch_size: int = 10_000) -> Iterator[Row]:
    import pyarrow.parquet as pq

    if path.lower().endswith(".gz"):
        with gzip.open(path, "rb") as f:
            data = f.read()  # gzip'd parquet is rare; parquet needs random access
        pf = pq.ParquetFile(io.BytesIO(data))
    else:
        pf = pq.ParquetFile(path)
    i = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield i, row
            i += 1


def read_csv(path: str) -> Iterator[Row]:
    csv.field_size_limit(1 << 30)
    with _open_binary(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:
            raise UserError(f"{path}: the CSV header names column(s) {twice} more than once; rename them")
        for i, row in enumerate(reader):
            bad = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                yield (
                    i,
                    RawError("undecodable text", f"invalid UTF-8 in field {bad[0]!r}", _preview(repr(row))),
                )
                continue
            yield i, {k: v for k, v in row.items() if k is not None}


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def read_hub(name: str, split: str = "train", config: str | None = None) -> Iterator[Row]:
    try:
        from datasets import load_dataset

        ds = load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        hint = " (offline mode is on)" if offline else ""
        raise UserError(f"cannot load hub dataset {name!r}{hint}: {str(exc).splitlines()[0][:200]}") from exc
    for i, row in enumerate(ds):
        yield i, dict(row)


def read_rows(source: str, hub_split: str = "train", hub_config: str | None = None) -> Iterator[Row]:
    kind = source_kind(str(source))
    if kind == "jsonl":
        return read_jsonl(str(source))
    if kind == "json":
        return read_json(str(source))
    if kind == "parquet":
        return read_parquet(str(source))
    if kind == "csv":
        return read_csv(str(source))
    return read_hub(str(source), split=hub_split, config=hub_config)
