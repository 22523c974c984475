"""`prefsift select`: evaluate a rule on a dataset split and save it as a named selection."""

from __future__ import annotations

NAME = "select"
HELP = "select pairs with a rule (default LossDiff-IRM 10-90) and save the selection"
DESCRIPTION = (
    "Evaluate a selection rule and store its members. Rule syntax: parts joined by '&', each "
    "METRIC:LO-HI (percentiles of the split, inclusive), METRIC:vLO-HI (values), top:METRIC:K, "
    "bottom:METRIC:K, random:FRACTION[:seed=N] or tif (the stored TIF flag). "
    "Example: --rule 'lossdiff:10-90 & irm:10-90'."
)


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True, help="dataset name")
    p.add_argument("--rule", default=None, help="rule text (default: 'lossdiff:10-90 & irm:10-90')")
    p.add_argument("--name", help="name of the selection to save (required unless --dry-run)")
    p.add_argument("--split", default="train", help="split the rule applies to (default: train)")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="METRIC=RUN_ID",
        help="use this score run (default: latest)",
    )
    p.add_argument("--no-annotations", action="store_true", help="ignore forced keep/drop annotations")
    p.add_argument("--force", action="store_true", help="replace an existing selection of that name")
    p.add_argument("--dry-run", action="store_true", help="evaluate and print, save nothing")


def parse_runs(items: list[str]) -> dict[str, str] | None:
    from prefsift.errors import UserError

    out = {}
    for item in items:
        metric, sep, run_id = item.partition("=")
        if not sep or not metric or not run_id:
            raise UserError(f"--run expects METRIC=RUN_ID, got {item!r}")
        out[metric.strip()] = run_id.strip()
    return out or None


def run(args):
    from prefsift.errors import UserError
    from prefsift.select import format_diagnostics, format_result, frames_to_records
    from prefsift.storage import connect, engine
    from prefsift.storage import rules as R
    from prefsift.storage.diagnose import diagnose
    from prefsift.storage.selections import create_selection

    rule = R.parse_rule(args.rule) if args.rule else R.DEFAULT_RULE
    runs = parse_runs(args.run)
    if not args.dry_run and not args.name:
        raise UserError("--name is required (or pass --dry-run)")
    with connect(args.db) as con:
        if args.dry_run:
            res = engine.select(con, args.dataset, rule, runs, args.split, not args.no_annotations).result
            return {"_text": format_result(res), **res.to_dict()}
        sel = create_selection(
            con, args.name, args.dataset, rule, runs, args.split, not args.no_annotations, force=args.force
        )
        diag = diagnose(con, args.name)
    text = f"saved selection {args.name!r}\n" + format_diagnostics(diag)
    return {"_text": text, "selection": sel, "diagnostics": frames_to_records(diag)}
