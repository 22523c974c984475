"""`prefsift experiment`: train θ on the selection, the full split, same-size random subsets and the
IF tertiles, over several seeds, and compare them on the held-out pairs with paired intervals."""

from __future__ import annotations

NAME = "experiment"
HELP = "does a selection help your model? train it against full / random / IF-tertile arms over seeds"
DESCRIPTION = (
    "From θ, trains each arm (the selection, the full split, a same-size random draw per seed, the small/"
    "medium/large IF tertiles) with matched compute, evaluates every model on the eval pairs, and reports "
    "each arm with a 95% interval and its paired difference to random and full (bootstrap over eval "
    "pairs and seeds). Every arm is cached: a rerun trains nothing new; a killed run resumes."
)


def add_arguments(p) -> None:
    from prefsift.config import add_training_arguments
    from prefsift.experiment import ARMS

    p.add_argument("--selection", required=True, help="the selection under test (prefsift select)")
    p.add_argument("--name", help="prefix of the arms' selections and models (default: the selection)")
    p.add_argument("--policy", default="theta", help="θ, the registered model every arm starts from")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="arms (default all)")
    p.add_argument(
        "--compute",
        choices=("steps", "epochs"),
        default="steps",
        help="steps: every arm takes the selection arm's optimizer steps (default); epochs: every arm "
        "takes --epochs passes over its own pairs",
    )
    p.add_argument("--eval-split", default="eval", help="held-out pairs to judge on (default eval)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--boot-seed", type=int, default=0, help="the bootstrap's seed (default 0)")
    add_training_arguments(p)


def run(args):
    from prefsift.config import config_from_args
    from prefsift.errors import UserError
    from prefsift.experiment import ExperimentConfig, format_experiment, run_experiment
    from prefsift.storage import resolve_db_path
    from prefsift.train import inherit_beta

    db = resolve_db_path(args.db)
    try:
        cfg = ExperimentConfig(
            selection=args.selection,
            name=args.name,
            policy=args.policy,
            seeds=tuple(args.seeds),
            arms=tuple(dict.fromkeys(args.arms)),
            compute=args.compute,
            epochs=args.epochs if args.epochs is not None else 2.0,
            eval_split=args.eval_split,
            n_boot=args.bootstrap,
            boot_seed=args.boot_seed,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    train_cfg = inherit_beta(db, args.policy, config_from_args("train", args))
    out = run_experiment(db, cfg, train_cfg, device=args.device)
    return {"_text": format_experiment(out), **out}
