"""`prefsift demo`: run the whole pipeline offline on an embedded default, then open the dashboard."""

from __future__ import annotations

NAME = "demo"
HELP = (
    "run the whole pipeline offline on SmolLM2-135M-Instruct and a bundled data set, then serve the dashboard"
)
DESCRIPTION = (
    "Ingests the bundled preference set (or --dataset), splits it, warms up θ, trains θ_val, scores IRM, "
    "LossDiff and exact IF/TIF, saves the LossDiff-IRM, TIF and random selections, evaluates θ, and serves "
    "the dashboard. Everything is cached: a second run only starts the dashboard. Default database: "
    "./prefsift-demo.duckdb."
)


def add_arguments(p) -> None:
    from prefsift.config import option
    from prefsift.demo import DemoConfig as D  # light: the defaults' one owner

    p.add_argument("--model", help="a hub id or local folder instead of the embedded SmolLM2-135M-Instruct")
    p.add_argument("--dataset", help="a file or hub dataset id instead of the bundled demo pairs")
    option(p, D, "--name", "dataset name in the database")
    p.add_argument("--limit", type=int, help="use only the first N rows (a quick look)")
    option(p, D, "--max-length", "max prompt+completion tokens", type=int)
    option(p, D, "--batch-size", "pairs per optimizer step", type=int)
    option(p, D, "--epochs", "warm-up epochs, as in the paper", type=float)
    option(p, D, "--lr", "LoRA learning rate of warm-up and θ_val", type=float)
    option(p, D, "--dtype", "model dtype", choices=["float32", "bfloat16"])
    option(p, D, "--device", "auto | cpu | cuda | cuda:N")
    p.add_argument("--no-influence", action="store_true", help="skip exact IF/TIF")
    p.add_argument(
        "--no-serve", action="store_true", help="stop after the pipeline (do not start the dashboard)"
    )
    from prefsift.commands.serve import add_address_arguments, add_auth_argument

    add_address_arguments(p)
    add_auth_argument(p)


def pipeline_argv(args) -> list[str]:
    """The same demo, as `prefsift demo --no-serve …` for a background job."""
    argv = ["demo", "--no-serve", "--name", args.name]
    for flag in "--model --dataset --limit --max-length --batch-size --epochs --lr --dtype --device".split():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--no-influence"] if args.no_influence else [])


def run(args):
    from prefsift.config import from_args
    from prefsift.demo import DEMO_DB, DemoConfig, run_demo, summary_text

    cfg = from_args(DemoConfig, args, db=args.db or DEMO_DB, influence=not args.no_influence)
    if args.no_serve:
        out = run_demo(cfg)
        print(summary_text(out))
        return out
    # The dashboard first, the pipeline beside it: the pipeline runs as a background job (its
    # stages and progress on the Overview page) and the pages fill as its stages land.
    from prefsift.cli import main as cli
    from prefsift.commands.serve import check_exposure
    from prefsift.jobs import start_job

    # Refused before the pipeline starts, not after: no background job left behind by a refusal.
    check_exposure(args.host, args.insecure_no_auth, warn=lambda line: None)
    job = start_job(cfg.db, pipeline_argv(args))
    print(
        f"prefsift demo: the pipeline runs in the background as job {job['job_id']} "
        f"(log: {job['log_path']}; `prefsift jobs show {job['job_id']} --db {cfg.db}`); it keeps running "
        f"if you stop the dashboard, `prefsift jobs cancel {job['job_id']} --db {cfg.db}` stops it.",
        flush=True,
    )
    serve = ["serve", "--db", cfg.db, "--host", args.host, "--port", str(args.port)]
    return cli(serve + (["--insecure-no-auth"] if args.insecure_no_auth else []))
