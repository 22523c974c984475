"""`prefsift fit-val`: θ_val <- DPO from θ on the validation pairs, 1 epoch, same π_ref and β."""

from __future__ import annotations

NAME = "fit-val"
HELP = "train the validation model θ_val (DPO from θ on the val split, 1 epoch)"


def add_arguments(p) -> None:
    from prefsift.config import add_training_arguments

    p.add_argument("--dataset", required=True, help="dataset whose 'val' split is used")
    p.add_argument(
        "--policy", help="the warm-up policy θ to start from (default: the dataset's θ, from its lineage)"
    )
    p.add_argument("--name", default="theta_val", help="name of the trained model (default theta_val)")
    add_training_arguments(p)


def run(args):
    from prefsift.commands.train import run_options
    from prefsift.config import config_from_args
    from prefsift.models import role_model
    from prefsift.train import inherit_beta, train

    policy = role_model(args.db, args.dataset, "policy", args.policy)
    cfg = inherit_beta(args.db, policy, config_from_args("fit-val", args))
    return train(args.db, cfg, policy, args.name, dataset=args.dataset, **run_options(args))
