"""`prefsift diagnose`: what a selection keeps and what it drops."""

from __future__ import annotations

NAME = "diagnose"
HELP = "diagnostics of a selection: kept share, overlaps (TIF, others), score and length stats, noise recall"


def add_arguments(p) -> None:
    p.add_argument("--selection", required=True, help="selection name")
    from prefsift.commands.calibrate import add_evidence_arguments, add_tif_band_argument

    add_tif_band_argument(p)
    add_evidence_arguments(p)


def run(args):
    from prefsift.commands.calibrate import tif_band
    from prefsift.config import from_args
    from prefsift.evidence import BANDS, EvidenceConfig, evidence, format_evidence
    from prefsift.select import format_diagnostics, frames_to_records
    from prefsift.storage import connect
    from prefsift.storage.diagnose import diagnose
    from prefsift.storage.selections import get_selection

    lo, hi = tif_band(args)
    bands = ((lo, hi), *(b for b in BANDS if b != (lo, hi)))
    ev_cfg = from_args(EvidenceConfig, args, {"n_boot": "bootstrap"}, bands=bands)
    with connect(args.db, read_only=True) as con:
        d = diagnose(con, args.selection, (lo, hi))
        ev = None
        if not args.no_evidence:
            sel = get_selection(con, args.selection)
            ev = evidence(
                con, sel["dataset"], sel["score_runs"] or None, sel["split"], args.selection, ev_cfg
            )
    text = format_diagnostics(d) + ("" if ev is None else "\n" + format_evidence(ev))
    return {"_text": text, **frames_to_records(d), "evidence": ev}
