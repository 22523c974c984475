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
    from prefsift.config import add_training_arguments, option
    from prefsift.experiment import ARMS
    from prefsift.experiment import ExperimentConfig as X

    p.add_argument("--selection", required=True, help="the selection under test (prefsift select)")
    p.add_argument("--name", help="prefix of the arms' selections and models (default: the selection)")
    option(p, X, "--policy", "θ, the registered model every arm starts from")
    option(p, X, "--seeds", "training seeds", type=int, nargs="+")
    option(p, X, "--arms", "arms", nargs="+", choices=ARMS)
    option(p, X, "--compute", "steps: every arm takes the selection arm's optimizer steps; epochs: every "
           "arm takes --epochs passes over its own pairs", choices=("steps", "epochs"))  # fmt: skip
    option(p, X, "--eval-split", "held-out pairs to judge on")
    option(p, X, "--bootstrap", "bootstrap replicates", field="n_boot", type=int)
    option(p, X, "--boot-seed", "the bootstrap's seed", type=int)
    add_training_arguments(p)


def run(args):
    from prefsift.config import config_from_args, from_args
    from prefsift.experiment import ExperimentConfig, format_experiment, run_experiment
    from prefsift.storage import resolve_db_path
    from prefsift.train import inherit_beta

    db = resolve_db_path(args.db)
    epochs = args.epochs if args.epochs is not None else ExperimentConfig.epochs  # None: not given
    arms = tuple(dict.fromkeys(args.arms))
    cfg = from_args(
        ExperimentConfig, args, {"n_boot": "bootstrap"}, seeds=tuple(args.seeds), arms=arms, epochs=epochs
    )
    train_cfg = inherit_beta(db, args.policy, config_from_args("train", args))
    out = run_experiment(db, cfg, train_cfg, device=args.device)
    return {"_text": format_experiment(out), **out}
