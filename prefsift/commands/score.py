"""`prefsift score`: cached log-probs of ref/policy(/val) over a dataset, then IRM, LossDiff, policy loss."""

from __future__ import annotations

NAME = "score"
HELP = "compute IRM (and LossDiff with --val) for every pair from cached per-model log-probs"
DESCRIPTION = (
    "Computes (or reuses) the log-probs of each model over the dataset split, then the scores. "
    "A rerun with the same inputs computes nothing; a killed run resumes where it stopped. "
    "Multi-process: `accelerate launch -m prefsift score ...` splits the pairs across processes."
)


DTYPES = ["float32", "bfloat16", "float16", "float64"]


def add_model_arguments(p) -> None:
    """Options shared by `score` and `logps`: the split, tokenization, dtype, device, batching, each
    default from ScoreConfig."""
    from prefsift.config import ScoreConfig, option

    option(p, ScoreConfig, "--split", "train | val | eval | all")
    add_tokenize_arguments(p, ScoreConfig)
    option(p, ScoreConfig, "--dtype", "model dtype", choices=DTYPES)
    option(p, ScoreConfig, "--device", "auto | cpu | cuda | cuda:N")
    option(
        p, ScoreConfig, "--batch-tokens", "padded tokens per forward batch (memory, not results)", type=int
    )
    p.add_argument("--wait", action="store_true", help="queue behind a running job instead of failing")


def add_tokenize_arguments(p, owner) -> None:
    from prefsift.config import option

    option(p, owner, "--max-length", "max prompt+completion tokens, or 'none'")
    option(p, owner, "--truncation-mode", "which end a long pair keeps", choices=["keep_start", "keep_end"])


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--ref",
        help="reference model: path, hub id or registered name (default: the one θ was trained against)",
    )
    p.add_argument(
        "--policy",
        help="policy θ: path, hub id or registered name (default: the dataset's warm-up policy, from its lineage)",
    )
    p.add_argument(
        "--val",
        help="validation model θ_val, enables LossDiff (default, when --policy is not given: the dataset's "
        "θ_val if one was trained; 'none' to skip)",
    )
    for who in ("ref", "policy", "val"):
        p.add_argument(f"--{who}-adapter", help=f"PEFT adapter folder for --{who}")
    from prefsift.config import ScoreConfig, option

    option(p, ScoreConfig, "--beta", "DPO β", type=float)
    add_model_arguments(p)


def tok_config_from(args):
    from prefsift.errors import UserError
    from prefsift.scoring.tokenize import TokenizeConfig

    raw = str(args.max_length).lower()
    try:
        max_length = None if raw in ("none", "0", "") else int(raw)
        return TokenizeConfig(max_length=max_length, truncation_mode=args.truncation_mode)
    except ValueError as exc:
        raise UserError(f"--max-length: {exc}") from None


def split_of(args):
    return None if args.split == "all" else args.split


def model_arg(db, value: str, adapter, args):
    """(ModelSpec, name to register or None): a name only when the user referred to one."""
    from pathlib import Path

    from prefsift.models import resolve_model

    spec = resolve_model(db, value, adapter=adapter, dtype=args.dtype, device=args.device)
    return spec, (None if Path(value).exists() else value)


def lock(args, what: str):
    """The job lock on the main process only (other ranks of a multi-process run share its job)."""
    import contextlib
    import os

    from prefsift.joblock import job_lock
    from prefsift.storage import resolve_db_path

    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return contextlib.nullcontext()
    return job_lock(resolve_db_path(args.db), what, wait=args.wait)


def run(args):
    import os

    from prefsift.models import policy_ref_val
    from prefsift.score import score_dataset
    from prefsift.storage import connect, engine, resolve_db_path, runs

    db = resolve_db_path(args.db)
    policy, ref_arg, val_arg = policy_ref_val(db, args.dataset, args.policy, args.ref, args.val)
    ref, ref_name = model_arg(db, ref_arg, args.ref_adapter, args)
    pol, pol_name = model_arg(db, policy, args.policy_adapter, args)
    val, val_name = model_arg(db, val_arg, args.val_adapter, args) if val_arg else (None, None)
    with lock(args, f"score {args.dataset}"):
        out = score_dataset(
            db,
            args.dataset,
            ref,
            pol,
            val,
            beta=args.beta,
            split=split_of(args),
            tok_config=tok_config_from(args),
            batch_tokens=args.batch_tokens,
            names={"ref": ref_name, "policy": pol_name, "val": val_name},
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return None  # rank 0 reports for the whole multi-process run
    lines = [f"scored {args.dataset} ({args.split}), beta={args.beta}:"]
    summary = {}
    with connect(db, read_only=True) as con:
        df = engine.get_scores(con, args.dataset, out)
        dropped = runs.get_score_run_config(con, out["irm"]).get("fully_truncated", {}).get("pair_ids", [])
    for metric, run_id in out.items():
        col = df[metric].dropna()
        summary[metric] = {
            "run_id": run_id,
            "n": int(col.size),
            "mean": float(col.mean()) if col.size else None,
        }
        lines.append(
            f"  {metric:12s} run {run_id}  n={col.size}  mean={col.mean():.4f}  "
            f"p10={col.quantile(0.1):.4f}  p90={col.quantile(0.9):.4f}"
        )
    if dropped:
        shown = ", ".join(dropped[:10]) + (", ..." if len(dropped) > 10 else "")
        lines.append(
            f"left out {len(dropped)} fully truncated pair(s) (the prompt fills --max-length, no response "
            f"token left; TRL drops them too): {shown}"
        )
    fully = {"n": len(dropped), "pair_ids": dropped}
    return {"_text": "\n".join(lines), "score_runs": out, "summary": summary, "fully_truncated": fully}
