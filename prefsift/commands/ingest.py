"""`prefsift ingest SOURCE --name NAME`: any preference source into a named dataset."""

from __future__ import annotations

NAME = "ingest"
HELP = "ingest a .jsonl/.json/.parquet/.csv (optionally .gz) file or a hub dataset into a named dataset"
DESCRIPTION = (
    "Formats are detected automatically (TRL standard, TRL conversational, implicit prompt as in "
    "HH-RLHF, pairwise with a label as in AlpacaEval) and can be forced with --format/--map. Rows that "
    "cannot be pairs go to a quarantine table with row number, field and reason. Exit code 1 only if "
    "nothing could be ingested."
)


def add_arguments(p) -> None:
    p.add_argument("source", help="a local file or a Hugging Face hub dataset id")
    p.add_argument("--name", required=True, help="dataset name to ingest into (created if new)")
    p.add_argument("--split", default="train", help="role of these pairs: train, val or eval (default train)")
    p.add_argument("--format", dest="fmt", choices=["standard", "conversational", "implicit", "pairwise"])
    p.add_argument(
        "--map",
        action="append",
        metavar="PART=COLUMN",
        help="column mapping, repeatable: prompt=, chosen=, rejected=, and for pairwise a=, b=, label=",
    )
    p.add_argument("--hub-split", default="train", help="split to read from a hub dataset")
    p.add_argument("--config", dest="hub_config", help="config name of a hub dataset")
    from prefsift.formats import DEFAULT_MAX_CHARS

    action = p.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_MAX_CHARS,
        help=f"largest accepted field, in characters (default {DEFAULT_MAX_CHARS:,})",
    )
    action.owner = "prefsift.formats.DEFAULT_MAX_CHARS"
    p.add_argument("--limit", type=int, help="read at most this many rows")
    p.add_argument(
        "--chat",
        action="store_true",
        help="store text pairs as conversations (user prompt, assistant answers) so the chat template applies",
    )


def run(args):
    from prefsift.formats import ColumnMap
    from prefsift.ingest import glued_note, ingest

    s = ingest(
        args.source,
        args.name,
        db=args.db,
        split=args.split,
        fmt=args.fmt,
        column_map=ColumnMap.parse(args.map),
        hub_split=args.hub_split,
        hub_config=args.hub_config,
        max_chars=args.max_chars,
        limit=args.limit,
        chat=args.chat,
    )
    lines = [
        f"{s['rows_read']:,} rows read from {s['source']} (format: {s['format']})",
        f"  {s['added']:,} pairs added to dataset {s['dataset']!r} (split {s['split']}), "
        f"{s['duplicates_or_existing']:,} already present or duplicated",
        f"  {s['quarantined']:,} rows quarantined" + (":" if s["quarantined"] else ""),
    ]
    for reason, n in s["quarantine_reasons"].items():
        lines.append(f"    {n:>8,}  {reason}")
    if s["quarantined"]:
        lines.append(f"  see them with: prefsift info --dataset {s['dataset']} --quarantine")
    if s["glued_boundary"]:
        lines.append(f"  note: {glued_note(s['glued_boundary'], s['valid'])}")
    if s["_exit"]:
        lines.append("error: nothing could be ingested")
    s["_text"] = "\n".join(lines)
    return s
