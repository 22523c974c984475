"""`prefsift calibrate`: LossDiff and IRM bands that best match the TIF selection."""

from __future__ import annotations

NAME = "calibrate"
HELP = "grid-search LossDiff/IRM percentile bands that maximise overlap with TIF within a kept range"


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True, help="dataset name (needs lossdiff, irm and if scores)")
    from prefsift.config import CalibrationConfig as C
    from prefsift.config import option

    option(p, C, "--min-kept", "smallest kept fraction", type=float)
    option(p, C, "--max-kept", "largest kept fraction", type=float)
    option(p, C, "--step", "percentile grid step", type=float)
    add_tif_band_argument(p)
    option(p, C, "--split", "the split searched")
    p.add_argument("--save", metavar="NAME", help="also save the chosen rule as a selection")
    p.add_argument("--force", action="store_true", help="replace the --save selection if it exists")
    add_evidence_arguments(p)
    option(p, C, "--permutations", "shuffles of IF for the null of the best overlap the search finds (0: none)",
           field="n_perm", type=int)  # fmt: skip


def add_tif_band_argument(p) -> None:
    """`--tif-band LO-HI` of `diagnose` and `calibrate`; its default is CalibrationConfig's."""
    from prefsift.config import CalibrationConfig as C

    action = p.add_argument(
        "--tif-band",
        default=f"{C.tif_lo:g}-{C.tif_hi:g}",
        help=f"percentile band of IF defining TIF (default {C.tif_lo:g}-{C.tif_hi:g})",
    )
    action.owner = "CalibrationConfig.tif_lo-tif_hi"


def tif_band(args) -> tuple[float, float]:
    from prefsift.errors import UserError

    try:
        lo, hi = (float(x) for x in args.tif_band.split("-"))
    except ValueError as exc:
        raise UserError(f"--tif-band expects LO-HI percentiles, got {args.tif_band!r} ({exc})") from exc
    return lo, hi


def add_evidence_arguments(p) -> None:
    """Options shared by `diagnose` and `calibrate`: the bootstrap behind every interval."""
    from prefsift.config import option
    from prefsift.evidence import EvidenceConfig

    option(p, EvidenceConfig, "--bootstrap", "bootstrap resamples per interval", field="n_boot", type=int)
    option(p, EvidenceConfig, "--seed", "seed of the bootstrap and permutations", type=int)
    p.add_argument("--no-evidence", action="store_true", help="skip correlations/AUROC with intervals")


def run(args):
    from prefsift.config import CalibrationConfig, from_args
    from prefsift.errors import UserError
    from prefsift.evidence import EvidenceConfig, evidence, format_evidence
    from prefsift.select import calibrate, frames_to_records
    from prefsift.storage import connect

    lo, hi = tif_band(args)
    cfg = from_args(CalibrationConfig, args, {"n_perm": "permutations"}, tif_lo=lo, tif_hi=hi)
    ev_cfg = from_args(EvidenceConfig, args, {"n_boot": "bootstrap"})
    with connect(args.db, read_only=not args.save) as con:
        try:
            out = calibrate(con, args.dataset, cfg)
        except ValueError as exc:
            if type(exc) is not ValueError:
                raise
            raise UserError(str(exc)) from exc
        ev = None if args.no_evidence else evidence(con, args.dataset, out["runs"], args.split, cfg=ev_cfg)
        if args.save:
            from prefsift.storage.selections import create_selection

            create_selection(
                con, args.save, args.dataset, out["rule"], out["runs"], args.split, force=args.force
            )
    fx, sn = out["fixed_rule_chance"], out["search_null"]
    lines = [
        f"best rule: {out['rule']}",
        f"overlap with TIF ({lo:g}-{hi:g} of IF on {out['n_if']:,} pairs): {out['overlap_tif']:.3f}",
        f"  a random selection of the same size: {fx['chance']:.3f} (95% range {fx['null_lo']:.3f}-"
        f"{fx['null_hi']:.3f}); lift {fx['lift']:.3f}, kappa {fx['kappa']:.3f}, Fisher p {fx['p_value']:.3g}",
    ]
    if sn:
        lines.append(
            f"  the search's own null (best rule with IF shuffled, {sn['n_perm']} times): "
            f"{sn['best_overlap_lo']:.3f}-{sn['best_overlap_hi']:.3f}, permutation p {sn['p_value']:.3g}"
        )
    lines += [
        f"kept {out['rule_n_kept']:,} of {out['n_total']:,} ({100 * out['rule_fraction']:.1f}%); "
        f"{out['n_candidates']:,} of {out['n_grid']:,} band pairs kept {args.min_kept:.0%}-{args.max_kept:.0%}",
        "top candidates:",
        out["top"].to_string(index=False),
    ]
    if args.save:
        lines.append(f"saved as selection {args.save!r}")
    if ev is not None:
        lines.append(format_evidence(ev))
    return {"_text": "\n".join(lines), **frames_to_records(out), "evidence": ev}
