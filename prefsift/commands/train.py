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
    p.add_argument(
        "--policy", help="which model is θ (default: the dataset's warm-up policy, from its lineage)"
    )
    p.add_argument("--name", help="name of the trained model (default trained-<selection or file>)")
    p.add_argument(
        "--no-evaluate",
        action="store_true",
        help="skip evaluating the trained model on the dataset's held-out 'eval' pairs (the ledger)",
    )
    add_training_arguments(p)


def run_options(args) -> dict:
    """What every training command (warmup, fit-val, train) passes on to prefsift.train.train."""
    return {"device": args.device, "resume": args.resume, "force": args.force, "wait": args.wait}


def run(args):
    from pathlib import Path

    from prefsift.config import config_from_args
    from prefsift.models import reference_of, role_model
    from prefsift.train import has_split, inherit_beta, selection_dataset, train

    dataset = args.dataset or (selection_dataset(args.db, args.selection) if args.selection else None)
    policy = role_model(args.db, dataset, "policy", args.policy)
    cfg = inherit_beta(args.db, policy, config_from_args("train", args))
    start = policy if args.start == "theta" else reference_of(args.db, policy)
    name = args.name or f"trained-{args.selection or Path(args.data).stem}"
    out = train(
        args.db,
        cfg,
        start,
        name,
        dataset=dataset,
        selection=args.selection,
        data_file=args.data,
        **run_options(args),
    )
    if not args.no_evaluate and dataset and out.get("model_id") and has_split(args.db, dataset, "eval"):
        from prefsift.evaluate import evaluate

        ev = evaluate(args.db, out["model_id"], dataset, split="eval", device=args.device, dtype=cfg.dtype)
        out["evaluation"] = {k: v for k, v in ev.items() if not k.startswith("_")}
        out["_text"] = out.get("_text", "") + "\n" + ev.get("_text", "")
    return out
