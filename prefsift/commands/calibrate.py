"""`prefsift calibrate`: LossDiff and IRM bands that best match the TIF selection."""

from __future__ import annotations

NAME = "calibrate"
HELP = "grid-search LossDiff/IRM percentile bands that maximise overlap with TIF within a kept range"


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True, help="dataset name (needs lossdiff, irm and if scores)")
    p.add_argument("--min-kept", type=float, default=0.5, help="smallest kept fraction (default 0.5)")
    p.add_argument("--max-kept", type=float, default=0.7, help="largest kept fraction (default 0.7)")
    p.add_argument("--step", type=float, default=5.0, help="percentile grid step (default 5)")
    p.add_argument("--tif-band", default="10-90", help="percentile band of IF defining TIF (default 10-90)")
    p.add_argument("--split", default="train", help="split (default train)")
    p.add_argument("--save", metavar="NAME", help="also save the chosen rule as a selection")
    p.add_argument("--force", action="store_true", help="replace the --save selection if it exists")
    add_evidence_arguments(p)
    p.add_argument(
        "--permutations",
        type=int,
        default=200,
        help="shuffles of IF for the null of the best overlap the search finds (default 200; 0: none)",
    )


def add_evidence_arguments(p) -> None:
    """Options shared by `diagnose` and `calibrate`: the bootstrap behind every interval."""
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples per interval (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutations (default 0)")
    p.add_argument("--no-evidence", action="store_true", help="skip correlations/AUROC with intervals")


def run(args):
    from prefsift.errors import UserError
    from prefsift.evidence import EvidenceConfig, evidence, format_evidence
    from prefsift.select import CalibrationConfig, calibrate, frames_to_records
    from prefsift.storage import connect

    try:
        lo, hi = (float(x) for x in args.tif_band.split("-"))
        cfg = CalibrationConfig(
            args.min_kept,
            args.max_kept,
            args.step,
            lo,
            hi,
            split=args.split,
            n_perm=args.permutations,
            seed=args.seed,
        )
        ev_cfg = EvidenceConfig(n_boot=args.bootstrap, seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
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
        f"kept {out['sql_n_kept']:,} of {out['n_total']:,} ({100 * out['sql_fraction']:.1f}%); "
        f"{out['n_candidates']:,} of {out['n_grid']:,} band pairs kept {args.min_kept:.0%}-{args.max_kept:.0%}",
        "top candidates:",
        out["top"].to_string(index=False),
    ]
    if args.save:
        lines.append(f"saved as selection {args.save!r}")
    if ev is not None:
        lines.append(format_evidence(ev))
    return {"_text": "\n".join(lines), **frames_to_records(out), "evidence": ev}
