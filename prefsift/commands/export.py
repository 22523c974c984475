"""`prefsift export`: a selection as a TRL-ready Parquet or JSONL file plus a manifest."""

from __future__ import annotations

NAME = "export"
HELP = "export a selection as TRL-ready parquet/jsonl (+ PATH.manifest.json)"


def add_arguments(p) -> None:
    p.add_argument("--selection", required=True, help="selection name")
    p.add_argument("--out", required=True, help="output file (.parquet or .jsonl)")
    p.add_argument("--format", choices=("parquet", "jsonl"), default=None, help="default: from the suffix")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args):
    from prefsift import __version__
    from prefsift.storage import connect
    from prefsift.storage.exports import export_selection

    with connect(args.db) as con:
        m = export_selection(
            con,
            args.selection,
            args.out,
            args.format,
            force=args.force,
            extra={"prefsift_version": __version__},
        )
    text = (
        f"wrote {m['rows']:,} pairs ({m['kind']}, {m['format']}) to {m['path']}\n"
        f"manifest: {m['manifest_path']}\nsha256: {m['sha256']}"
    )
    ft = m["fully_truncated_left_out"]
    if ft["n"]:
        text += (
            f"\nleft out {ft['n']} fully truncated pair(s) of the selection (the prompt fills max_length: "
            "no response token; TRL drops them): see the manifest"
        )
    return {"_text": text, **m}
