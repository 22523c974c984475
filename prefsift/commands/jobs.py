"""`prefsift jobs start|list|show|cancel`: background jobs (the dashboard's way to run work)."""

from __future__ import annotations

import argparse

NAME = "jobs"
HELP = "run a prefsift command in the background, list jobs, show one, cancel one"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["start", "list", "show", "cancel"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="start: -- SUBCOMMAND ARGS...; show/cancel: JOB_ID")


def run(args):
    from prefsift import jobs
    from prefsift.errors import UserError
    from prefsift.storage import connect
    from prefsift.storage import jobs as jobs_store

    # argparse.REMAINDER also swallows options given after ACTION: take ours back from before `--`.
    rest = list(args.rest)
    argv: list[str] = []
    if "--" in rest:
        i = rest.index("--")
        rest, argv = rest[:i], rest[i + 1 :]
    while rest and rest[0].startswith("--"):
        opt = rest.pop(0)
        if opt == "--json":
            args.json = True
        elif opt == "--db" and rest:
            args.db = rest.pop(0)
        elif opt.startswith("--db="):
            args.db = opt.split("=", 1)[1]
        else:
            raise UserError(f"jobs: unknown option {opt!r}")
    if args.action == "start":
        argv = argv or rest
        out = jobs.start_job(args.db, argv)
        out["_text"] = f"started job {out['job_id']}\n  log: {out['log_path']}"
        return out
    if args.action == "list":
        with connect(args.db, read_only=True) as con:
            df = jobs_store.list_jobs(con)
        views = [jobs.job_view(r) for r in df.to_dict(orient="records")]
        lines = [
            f"{v['job_id']:<40} {v['status']:<8} {v['progress'].get('stage', '')} "
            f"{v['progress'].get('done', '')}/{v['progress'].get('total', '') or '?'}"
            for v in views
        ]
        return {"jobs": views, "_text": "\n".join(lines) or "no jobs"}
    if not rest:
        raise UserError(f"jobs {args.action}: give a JOB_ID")
    if args.action == "cancel":
        out = jobs.cancel_job(args.db, rest[0])
        out["_text"] = f"sent SIGTERM to job {rest[0]}"
        return out
    with connect(args.db, read_only=True) as con:
        job = jobs_store.get_job(con, rest[0])
    if job is None:
        raise UserError(f"no job {rest[0]}")
    v = jobs.job_view(job)
    try:
        from pathlib import Path

        tail = Path(v["log_path"]).read_text(errors="replace").splitlines()[-20:]
    except OSError:
        tail = []
    v["log_tail"] = tail
    v["_text"] = f"{v['job_id']} {v['status']} {v['progress']}\n" + "\n".join(tail)
    return v
