"""`prefsift warmup`: θ <- DPO from the reference model on all training pairs, 1 epoch."""

from __future__ import annotations

NAME = "warmup"
HELP = "train the warm-up policy θ (DPO from the reference on the train split, 1 epoch, LoRA by default)"


def add_arguments(p) -> None:
    from prefsift.config import add_training_arguments

    p.add_argument("--dataset", required=True, help="dataset whose 'train' split is used")
    p.add_argument(
        "--model",
        help="the reference (SFT) model: path, hub id or registered name "
        "(default: the newest registered reference)",
    )
    p.add_argument("--name", default="theta", help="name of the trained model (default theta)")
    add_training_arguments(p)


def run(args):
    from prefsift.commands.train import run_options
    from prefsift.config import config_from_args
    from prefsift.models import default_reference, register_reference
    from prefsift.train import train

    cfg = config_from_args("warmup", args)
    ref = register_reference(args.db, args.model) if args.model else default_reference(args.db)
    return train(args.db, cfg, ref, args.name, dataset=args.dataset, **run_options(args))
