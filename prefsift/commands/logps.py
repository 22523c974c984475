"""`prefsift logps`: cached sequence log-probs of one model over a dataset split."""

from __future__ import annotations

NAME = "logps"
HELP = "compute (or reuse) the chosen/rejected log-probs of one model over a dataset"


def add_arguments(p) -> None:
    from prefsift.commands.score import add_model_arguments

    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True, help="path, hub id or registered name")
    p.add_argument("--adapter", help="PEFT adapter folder")
    p.add_argument("--role", help="role to register the model with (reference, policy, validation, ...)")
    add_model_arguments(p)


def run(args):
    from prefsift.commands.score import lock, model_arg, split_of, tok_config_from
    from prefsift.score import ensure_logps
    from prefsift.storage import connect, resolve_db_path, runs

    db = resolve_db_path(args.db)
    spec, name = model_arg(db, args.model, args.adapter, args)
    with lock(args, f"logps {args.dataset}"):
        run_id = ensure_logps(
            db,
            spec,
            args.dataset,
            split=split_of(args),
            tok_config=tok_config_from(args),
            batch_tokens=args.batch_tokens,
            name=name,
            role=args.role,
        )
    with connect(db, read_only=True) as con:
        t = runs.get_logps(con, run_id).to_pandas()
    text = (
        f"log-prob run {run_id}: {len(t)} pairs, mean chosen {t.chosen_logp.mean():.3f}, "
        f"mean rejected {t.rejected_logp.mean():.3f}, truncated {int(t.truncated.sum())}"
    )
    return {"_text": text, "run_id": run_id, "n_pairs": len(t), "truncated": int(t.truncated.sum())}
