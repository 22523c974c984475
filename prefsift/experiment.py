"""`prefsift experiment`: does a selection help *this* model? The paper's downstream comparison,
run on the user's own θ and data (docs/METHOD.md "Downstream" and "Chance levels").

Arms, each trained from θ by the ordinary `prefsift.train.train` (TRL DPO) on a stored selection:
- `selection`: the selection under test;
- `full`: every pair of its split;
- `random`: a same-size random subset, a fresh draw per seed;
- `if-low` / `if-mid` / `if-high`: the IF tertiles (the paper's TIF claim: medium-influence pairs
  beat small and large ones), when IF scores exist;
- `theta`: θ itself, untrained further (the floor every arm should clear).
Matched compute: `steps` (default) gives every arm the optimizer steps the selection arm takes in
`epochs` epochs (DPOConfig max_steps); `epochs` gives every arm `epochs` passes over its own pairs.
Seeds redraw the random subset and the training order (dropout, batches); the eval pairs are fixed.
Every arm is judged on the held-out `eval` pairs (reward accuracy: share of positive margins; DPO
loss), and reported with a 95% interval and its paired difference to `random` and to `full`
(bootstrap over eval pairs and seeds, the same draw for every arm: scoring.diagnostics.arm_bootstrap).
Caching and resuming: each arm is a named selection and a named model; a trained arm is found by
its training run id and not trained again, a killed training resumes from its checkpoint, and the
evaluation's log-probs are cached runs. Results go to the ledger (`evaluations`) and to the
diagnostics table under run id `experiment:<name>` (what the dashboard reads), and to a JSON file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass

import numpy as np

from prefsift.errors import UserError

log = logging.getLogger(__name__)

ARMS = ("selection", "full", "random", "if-low", "if-mid", "if-high")
TERTILES = {"if-low": (0.0, 100 / 3), "if-mid": (100 / 3, 200 / 3), "if-high": (200 / 3, 100.0)}
REFS = ("random", "full")


@dataclass(frozen=True)
class ExperimentConfig:
    selection: str
    name: str | None = None  # prefix of the arms' selections and models (default: the selection)
    policy: str = "theta"  # θ: every arm starts from it
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ARMS
    compute: str = "steps"  # steps | epochs (see the module docstring)
    epochs: float = 2.0  # the paper continues from θ for 2 epochs
    eval_split: str = "eval"
    n_boot: int = 2000
    boot_seed: int = 0

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ValueError(f"unknown arm(s) {bad} (choose from {', '.join(ARMS)})")
        if "selection" not in self.arms:
            raise ValueError("the arms must include 'selection' (the one under test)")
        if self.compute not in ("steps", "epochs"):
            raise ValueError(f"compute must be 'steps' or 'epochs', got {self.compute!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.n_boot < 100:
            raise ValueError("n_boot must be at least 100")

    @property
    def prefix(self) -> str:
        return f"xp-{self.name or self.selection}"


def _arm_selections(db, cfg: ExperimentConfig) -> tuple[dict, dict]:
    """arm -> {seed: selection name} (created if missing), and facts about the selection."""
    from prefsift.storage import connect
    from prefsift.storage import rules as R
    from prefsift.storage.pairs import count_pairs
    from prefsift.storage.runs import latest_score_runs
    from prefsift.storage.selections import create_selection, get_selection, selection_exists

    with connect(db) as con:
        sel = get_selection(con, cfg.selection)
        dataset, split = sel["dataset"], sel["split"]
        n_total = count_pairs(con, dataset, split)
        has_if = "if" in latest_score_runs(con, dataset)
        facts = {
            "dataset": dataset,
            "split": split,
            "n_selected": int(sel["n_kept"]),
            "n_total": int(n_total),
        }
        # A random draw is sized over the pairs it may draw: the split less its fully truncated ones.
        fraction = min(1.0, sel["n_kept"] / max(n_total - sel["resolved"].get("n_truncated", 0), 1))
        out: dict[str, dict[int, str]] = {}

        def ensure(name: str, rule) -> str:
            # A stored arm is reused (its trained model too) unless its rule changed, e.g. the
            # selection under test was re-made with another size.
            if not selection_exists(con, name) or get_selection(con, name)["rule"] != rule.to_dict():
                create_selection(con, name, dataset, rule, None, split, with_annotations=False, force=True)
            return name

        for arm in cfg.arms:
            if arm == "selection":
                out[arm] = {s: cfg.selection for s in cfg.seeds}
            elif arm == "full":
                name = ensure(f"{cfg.prefix}-full", R.RandomFraction(1.0, seed=0))
                out[arm] = {s: name for s in cfg.seeds}
            elif arm == "random":  # a new draw per seed, the selection's size
                out[arm] = {
                    s: ensure(f"{cfg.prefix}-random-s{s}", R.RandomFraction(fraction, seed=s))
                    for s in cfg.seeds
                }
            elif has_if:
                lo, hi = TERTILES[arm]
                name = ensure(f"{cfg.prefix}-{arm}", R.Band("if", lo, hi))
                out[arm] = {s: name for s in cfg.seeds}
        facts["sizes"] = {
            arm: int(get_selection(con, names[cfg.seeds[0]])["n_kept"]) for arm, names in out.items()
        }
    if not has_if:
        facts["skipped"] = "no IF scores: the IF tertile arms need `prefsift influence` first"
    return out, facts


def _steps(n_pairs: int, batch: int, epochs: float) -> int:
    """Optimizer steps of `epochs` passes over n pairs in batches of `batch` (last batch partial)."""
    return max(1, math.ceil(math.ceil(n_pairs / batch) * epochs))


def run_experiment(db, cfg: ExperimentConfig, train_cfg, device: str = "auto", echo=log.info) -> dict:
    """Train every arm for every seed (cached), evaluate on the eval pairs, compare with intervals."""
    from prefsift.evaluate import evaluate, pair_margins
    from prefsift.scoring.diagnostics import arm_bootstrap
    from prefsift.scoring.metrics import dpo_loss
    from prefsift.train import train

    selections, facts = _arm_selections(db, cfg)
    dpo = dict(train_cfg.dpo)
    kw = train_cfg.dpo_kwargs()
    batch = int(kw["per_device_train_batch_size"]) * int(kw.get("gradient_accumulation_steps") or 1)
    dpo["num_train_epochs"] = cfg.epochs
    if cfg.compute == "steps":  # every arm takes the selection arm's optimizer steps
        dpo["max_steps"] = _steps(facts["n_selected"], batch, cfg.epochs)
    facts["max_steps"] = dpo.get("max_steps")
    facts["batch"] = batch

    margins: dict[str, list[np.ndarray]] = {}
    eval_ids = None
    trained = []
    for seed in cfg.seeds:
        tcfg = dataclasses.replace(train_cfg, kind="train", seed=int(seed), dpo=dpo)
        for arm, names in selections.items():
            model = f"{cfg.prefix}-{arm}-s{seed}"
            echo(f"experiment {cfg.prefix}: {arm}, seed {seed} (selection {names[seed]})")
            res = train(db, tcfg, cfg.policy, model, selection=names[seed], device=device)
            trained.append({"arm": arm, "seed": seed, "model": model, "status": res.get("status")})
            evaluate(db, model, facts["dataset"], cfg.eval_split)  # the ledger row
            ids, m, _ = pair_margins(db, model, facts["dataset"], cfg.eval_split)
            if eval_ids is None:
                eval_ids = ids
            elif ids != eval_ids:
                raise UserError("the arms were evaluated on different eval pairs: was the split changed?")
            margins.setdefault(arm, []).append(m)
    ids, m_theta, _ = pair_margins(db, cfg.policy, facts["dataset"], cfg.eval_split)
    if ids != eval_ids:
        raise UserError("θ was evaluated on other eval pairs than the arms")
    margins["theta"] = [m_theta]

    per_arm = {a: np.stack(v) for a, v in margins.items()}  # (S, n_eval)
    metrics = {
        "reward_accuracy": {a: (v > 0).astype(np.float64) for a, v in per_arm.items()},
        "loss": {a: dpo_loss(v) for a, v in per_arm.items()},
    }
    results = {name: arm_bootstrap(vals, REFS, cfg.n_boot, cfg.boot_seed) for name, vals in metrics.items()}
    summary = {
        "experiment": cfg.prefix,
        "config": {**dataclasses.asdict(cfg), "train": train_cfg.to_dict()},
        **facts,
        "n_eval": len(eval_ids),
        "runs": trained,
        "metrics": {
            name: {
                "arms": r["arms"],
                "diffs": [{"arm": a, "vs": ref, **d} for (a, ref), d in r["diffs"].items()],
            }
            for name, r in results.items()
        },
    }
    _save(db, summary)
    return summary


def _save(db, summary: dict) -> None:
    from prefsift.storage import connect
    from prefsift.storage.paths import runs_dir
    from prefsift.storage.runs import save_diagnostics

    folder = runs_dir(db) / summary["experiment"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    values, detail = {}, {}
    for metric, r in summary["metrics"].items():
        for arm, v in r["arms"].items():
            values[f"{metric}/{arm}"] = v["mean"]
            detail[f"{metric}/{arm}"] = v
        for d in r["diffs"]:
            values[f"{metric}/{d['arm']}-minus-{d['vs']}"] = d["diff"]
    with connect(db) as con:
        save_diagnostics(con, f"experiment:{summary['experiment']}", values, {"summary": summary})


def format_experiment(s: dict) -> str:
    lines = [
        f"experiment {s['experiment']} on {s['dataset']} ({s['split']}): selection {s['n_selected']} of "
        f"{s['n_total']} pairs; {len(s['config']['seeds'])} seeds; eval on {s['n_eval']} held-out pairs",
        f"compute: {s['config']['compute']}"
        + (
            f" (every arm {s['max_steps']} optimizer steps of {s['batch']} pairs)"
            if s.get("max_steps")
            else f" ({s['config']['epochs']:g} epochs over each arm's own pairs)"
        ),
        "arm sizes: " + ", ".join(f"{a} {n}" for a, n in s["sizes"].items()),
    ]
    if s.get("skipped"):
        lines.append(s["skipped"])
    for metric, r in s["metrics"].items():
        lines.append(f"{metric} (mean [95% interval], bootstrap over eval pairs and seeds):")
        for arm, v in r["arms"].items():
            lines.append(f"  {arm:<10} {v['mean']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}]")
        lines.append("  paired differences:")
        for d in r["diffs"]:
            lines.append(
                f"    {d['arm']:<10} - {d['vs']:<7} {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]  p {d['p']:.3g}"
            )
    return "\n".join(lines)
