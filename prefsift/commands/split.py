"""`prefsift split`: deterministic train / val / eval splits, recorded in the database."""

from __future__ import annotations

NAME = "split"
HELP = "assign train/val/eval splits by a seeded hash of each pair id (user-given val/eval pairs are kept)"


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of pairs for validation (default 0.1, or 0 when val pairs were ingested)",
    )
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=None,
        help="share held out for evaluation only (default 0.1, or 0 when eval pairs were ingested)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--force", action="store_true", help="re-split even though models were trained on the old split"
    )


def run(args):
    from prefsift.splits import make_splits

    out = make_splits(args.db, args.dataset, args.val_fraction, args.eval_fraction, args.seed, args.force)
    out["_text"] = (
        f"{args.dataset}: train {out['train']}, val {out['val']}, eval {out['eval']} "
        f"(seed {out['seed']}, {out['moved']} pair(s) moved, {out['pinned']} user-given kept)"
    )
    return out
