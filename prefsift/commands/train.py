"""`prefsift train`: DPO on a saved selection or an exported file, from θ (default) or π_ref."""

from __future__ import annotations

NAME = "train"
HELP = "DPO on a selection (--selection) or an exported file (--data), from θ or the reference, 2 epochs"


def add_arguments(p) -> None:
    from prefsift.config import add_training_arguments

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--selection", help="a saved selection (prefsift select)")
    src.add_argument("--data", help="an exported .parquet or .jsonl file (prompt, chosen, rejected)")
    p.add_argument("--dataset", help="the dataset the data belongs to (recorded; implied by --selection)")
    p.add_argument(
        "--from",
        dest="start",
        choices=["theta", "ref"],
        default="theta",
        help="start from the warm-up policy θ (default, as in the paper) or the reference",
    )
    p.add_argument("--policy", default="theta", help="which registered model is θ (default theta)")
    p.add_argument("--name", help="name of the trained model (default trained-<selection or file>)")
    add_training_arguments(p)


def run(args):
    from pathlib import Path

    from prefsift.config import config_from_args
    from prefsift.train import inherit_beta, reference_of, train

    cfg = inherit_beta(args.db, args.policy, config_from_args("train", args))
    start = args.policy if args.start == "theta" else reference_of(args.db, args.policy)
    name = args.name or f"trained-{args.selection or Path(args.data).stem}"
    return train(
        args.db,
        cfg,
        start,
        name,
        dataset=args.dataset,
        selection=args.selection,
        data_file=args.data,
        device=args.device,
        resume=args.resume,
        force=args.force,
        wait=args.wait,
    )
