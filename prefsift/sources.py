"""Read raw rows from any source, streaming: local .jsonl/.json/.parquet/.csv (each optionally
.gz) or a Hugging Face hub dataset.

Every reader yields `(row_number, row_or_error)`: a dict for a readable row, or a
`RawError(reason, detail, raw)` for a row that cannot even be parsed (malformed JSON, invalid
UTF-8). Row numbers are 0-based positions in the source, so quarantine rows point back to
the input. Memory stays flat: nothing reads a whole file at once.

A file whose container breaks off (a truncated .gz or JSON array, a CSV cut inside a quoted
field, a corrupt Parquet file) raises `SourceBroken(path, row, reason)` once the rows before
the break have been yielded: `row` is the first row that could not be read.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import zlib
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


class SourceBroken(UserError):
    """The file itself breaks off at `row`: that row and the ones after it cannot be read."""

    def __init__(self, path: str, row: int, reason: str):
        self.path, self.row, self.reason = path, row, reason
        super().__init__(f"{path}: the file breaks off at row {row:,}: {reason}")


LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def source_kind(source: str) -> str:
    """'jsonl' | 'json' | 'parquet' | 'csv' for local files, 'hub' otherwise."""
    if Path(source).is_dir():
        raise UserError(
            f"{source}: is a directory; give one file (.jsonl, .json, .parquet or .csv, optionally .gz) "
            "and ingest a folder's files one by one"
        )
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
            if isinstance(obj, dict):
                yield i, obj
            else:
                why = f"row is a JSON {type(obj).__name__}, not an object"
                yield i, RawError("wrong type", why, _preview(text))


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
            raise SourceBroken(
                path, 0, f"invalid UTF-8 ({exc}); a JSON array cannot be split into rows"
            ) from exc
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
                raise SourceBroken(path, i, f"malformed or truncated JSON array ({exc})") from exc
            if isinstance(obj, dict):
                yield i, obj
            else:
                why = f"element is a JSON {type(obj).__name__}"
                yield i, RawError("wrong type", why, _preview(json.dumps(obj)))
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
    yield from enumerate(row for batch in pf.iter_batches(batch_size=batch_size) for row in batch.to_pylist())


class _RecordLines:
    """A text file's lines, remembering those read since `take()`: the csv module reads no
    further than the record it returns, so these are the lines of the last record."""

    def __init__(self, f):
        self._f, self._lines = f, []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._f)
        self._lines.append(line)
        return line

    def take(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines


def _ends_inside_quotes(lines: list[str]) -> bool:
    """True when a record's text ends inside a quoted field, i.e. the file was cut in the middle
    of it (the lenient reader accepts that silently; the strict one names it)."""
    try:
        list(csv.reader(lines, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def read_csv(path: str) -> Iterator[Row]:
    csv.field_size_limit(1 << 30)
    with _open_binary(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        lines = _RecordLines(f)
        reader = csv.DictReader(lines)
        header = reader.fieldnames or []
        lines.take()
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:
            raise UserError(f"{path}: the CSV header names column(s) {twice} more than once; rename them")
        # each row is yielded once the next one is read: only the last can be cut off by the end
        pending: Row | None = None
        record: list[str] = []
        for i, row in enumerate(reader):
            if pending is not None:
                yield pending
            record = lines.take()
            bad = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                err = RawError("undecodable text", f"invalid UTF-8 in field {bad[0]!r}", _preview(repr(row)))
                pending = (i, err)
            else:
                pending = (i, {k: v for k, v in row.items() if k is not None})
        if pending is not None:
            if _ends_inside_quotes(record):
                raise SourceBroken(
                    path, pending[0], "the file ends inside a quoted field: it was cut in this row"
                )
            yield pending


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
    source = str(source)
    kind = source_kind(source)
    if kind == "hub":
        return read_hub(source, split=hub_split, config=hub_config)
    if os.path.getsize(source) == 0:
        raise UserError(f"{source}: the file is empty (0 bytes); nothing to ingest")
    readers = {"jsonl": read_jsonl, "json": read_json, "parquet": read_parquet, "csv": read_csv}
    return _until_broken(source, readers[kind](source))


def _until_broken(path: str, rows: Iterator[Row]) -> Iterator[Row]:
    """The reader's rows; a container that breaks off (truncated or corrupt) becomes one
    `SourceBroken` naming the first row that could not be read."""
    from pyarrow import ArrowException

    next_row = 0
    try:
        for i, row in rows:
            next_row = i + 1
            yield i, row
    except (EOFError, OSError, zlib.error, csv.Error, ArrowException) as exc:
        raise SourceBroken(path, next_row, _why(exc)) from exc


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if isinstance(exc, EOFError):
        return f"the compressed stream ends early, the file is truncated ({text})"
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return f"not valid gzip data ({text})"
    if isinstance(exc, csv.Error):
        return f"unreadable CSV ({text})"
    if "magic bytes not found in footer" in text:
        return (
            f"not a readable Parquet file ({text}); Parquet keeps its row index in a footer at the "
            "end, so a truncated file has no readable row"
        )
    return text
