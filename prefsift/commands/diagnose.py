"""`prefsift diagnose`: what a selection keeps and what it drops."""

from __future__ import annotations

NAME = "diagnose"
HELP = "diagnostics of a selection: kept share, overlaps (TIF, others), score and length stats, noise recall"


def add_arguments(p) -> None:
    p.add_argument("--selection", required=True, help="selection name")
    p.add_argument("--tif-band", default="10-90", help="percentile band of IF defining TIF (default 10-90)")


def run(args):
    from prefsift.errors import UserError
    from prefsift.select import format_diagnostics, frames_to_records
    from storage import connect
    from storage.diagnose import diagnose

    try:
        lo, hi = (float(x) for x in args.tif_band.split("-"))
    except ValueError as exc:
        raise UserError(f"--tif-band expects LO-HI percentiles, got {args.tif_band!r}") from exc
    with connect(args.db, read_only=True) as con:
        d = diagnose(con, args.selection, (lo, hi))
    return {"_text": format_diagnostics(d), **frames_to_records(d)}
