"""`prefsift demo` on a fresh machine: first run (model built, every stage computed) and second run.

    python benchmarks/demo.py [--limit N] [--work DIR] [--out FILE] [-- DEMO ARGS]
    e.g. -- --dataset ../shared/data/alpaca_eval-alpaca-7b-vs-text-davinci-003.gpt4.json.gz --limit 300

Runs `prefsift demo --no-serve --json` twice under /usr/bin/time -v, with a fresh model cache
(PREFSIFT_CACHE) and a fresh database in the work folder, and writes
benchmarks/results/demo.md: wall time, peak RSS and every stage's seconds of both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C


def run_demo(work: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PREFSIFT_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "prefsift", "demo", "--db", str(work / "demo.duckdb"),
           "--no-serve", "--json", *extra]  # fmt: skip
    with C.Stopwatch() as sw:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"prefsift demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    # the JSON summary is the last thing printed, after the stages' own lines
    start = proc.stdout.rfind("\n{\n") + 1 if "\n{\n" in proc.stdout else proc.stdout.index("{")
    out = json.loads(proc.stdout[start:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"wall_s": sw.wall, "peak_rss_gib": rss / 2**20, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, help="only the first N bundled pairs")
    ap.add_argument("--work", help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--out", default=str(C.RESULTS / "demo.md"))
    ap.add_argument("--from-log", help="re-render the table from a previous run's printed output")
    ap.add_argument("--loads", default="nan,nan,nan", help="with --from-log: the load averages to print")
    ap.add_argument("demo_args", nargs="*", help="extra `prefsift demo` arguments (after --)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="prefsift-demo-bench-"))
    if not args.from_log:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    extra = (["--limit", str(args.limit)] if args.limit else []) + args.demo_args
    # the demo runs in the work folder: a data file named relative to here must still be found there
    given = [str(Path(a).resolve()) if i and extra[i - 1] == "--dataset" and Path(a).exists() else a
             for i, a in enumerate(extra)]  # fmt: skip
    if args.from_log:  # re-render from the two JSON summaries a run printed (and its load averages)
        text = Path(args.from_log).read_text()
        dec, i = json.JSONDecoder(), text.index("{")
        first, j = dec.raw_decode(text, i)
        second, _ = dec.raw_decode(text, text.index("{", j))
        load0 = load1 = "/".join(f"{float(x):.1f}" for x in args.loads.split(","))
    else:
        load0 = C.load()
        first = run_demo(work, given)
        print(json.dumps(first, indent=1), flush=True)
        second = run_demo(work, given)
        print(json.dumps(second, indent=1), flush=True)
        load1 = C.load()
    stages = list(first["stage_seconds"])
    lines = [
        "## The demo: `prefsift demo` first and second run",
        "",
        f"- {C.about(load0, load_at_end=load1)} No GPU.",
        f"- Command: `python benchmarks/demo.py {' '.join(sys.argv[1:])}` (runs `prefsift demo --no-serve --json"
        f"{' ' + ' '.join(extra) if extra else ''}` twice with a fresh model cache and database).",
        f"- Kept by LossDiff-IRM: {first.get('kept')} of {first.get('total')} training pairs.",
        "",
        "| stage | first run s | second run s | first run: the stage's peak RSS, GiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    peaks = first.get("peak_rss_gib_per_stage", {})
    for st in stages:
        lines.append(
            f"| {st} | {first['stage_seconds'][st]:.1f} | {second['stage_seconds'].get(st, float('nan')):.1f} | "
            f"{peaks.get(st, float('nan')):.2f} |"
        )
    lines += [
        f"| pipeline total (as the demo reports it) | {first['total_seconds']:.1f} | {second['total_seconds']:.1f} | |",
        f"| **wall clock, process start to exit** (start-up and, first run, building the embedded model) | "
        f"**{first['wall_s']:.1f}** | **{second['wall_s']:.1f}** | |",
        # the demo resets the kernel's peak counter before each stage (per-stage peaks), which resets
        # what /usr/bin/time reports as well: the process's peak is the largest stage's
        f"| peak RSS GiB (the largest stage's) | {max(first.get('peak_rss_gib_per_stage', {}).values(), default=first['peak_rss_gib']):.2f} | "
        f"{max(second.get('peak_rss_gib_per_stage', {}).values(), default=second['peak_rss_gib']):.2f} | |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)
    if not args.work and not args.from_log:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
