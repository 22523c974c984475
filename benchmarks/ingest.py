"""Ingest N generated preference pairs (default 1,000,000) and report wall time and peak memory.

    python benchmarks/ingest.py [--n 1000000] [--out benchmarks/results/ingest.md]

The input is a JSONL file of synthetic standard pairs (~300 bytes each, 2% bad rows mixed in
to exercise the quarantine path); the ingest runs in a child process so that its peak RSS is
measured alone. Targets (issue #2): < 60 s and < 2 GB on the 2-core project machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from".split()
)


def make_input(path: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    bad = 0
    with open(path, "w") as f:
        for i in range(n):
            words = " ".join(rng.choices(WORDS, k=20))
            if i % 50 == 49:
                f.write(json.dumps({"prompt": f"q{i} {words}", "chosen": "", "rejected": "x"}) + "\n")
                bad += 1
                continue
            f.write(
                json.dumps(
                    {
                        "prompt": f"Question {i}: {words}?",
                        "chosen": f"A good answer {i}: " + " ".join(rng.choices(WORDS, k=25)),
                        "rejected": f"A bad answer {i}: " + " ".join(rng.choices(WORDS, k=15)),
                    }
                )
                + "\n"
            )
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--out", default=None, help="write a Markdown result section here")
    args = ap.parse_args()
    load0 = C.load()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pairs.jsonl"
        with C.Stopwatch() as gen:
            bad = make_input(src, args.n)
        db = Path(tmp) / "bench.duckdb"
        cmd = [
            sys.executable,
            "-m",
            "prefsift",
            "ingest",
            str(src),
            "--name",
            "bench",
            "--db",
            str(db),
            "--json",
        ]
        env = dict(os.environ, PREFSIFT_NO_PROGRESS="1")
        with C.Stopwatch() as sw:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        wall = sw.wall
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb = usage.ru_maxrss / 1024
        cpu_s = usage.ru_utime + usage.ru_stime
        summary = json.loads(out.stdout)
        with C.Stopwatch() as sw2:
            again = json.loads(
                subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
            )
        size_mb = src.stat().st_size / 1e6
        db_mb = db.stat().st_size / 1e6
    assert summary["added"] == args.n - bad and summary["quarantined"] == bad, summary
    assert again["added"] == 0
    lines = [
        "## ingest",
        "",
        C.about(load0),
        f"Command: `python benchmarks/ingest.py --n {args.n}`",
        "",
        "| what | value |",
        "| --- | --- |",
        f"| pairs in the file | {args.n:,} ({size_mb:.0f} MB JSONL, {bad:,} bad rows) |",
        f"| ingest wall time | {wall:.1f} s ({args.n / wall:,.0f} rows/s) |",
        f"| ingest CPU time (user + system) | {cpu_s:.1f} s |",
        f"| peak memory (RSS of the ingest process) | {peak_mb:,.0f} MB |",
        f"| re-ingest (adds 0) | {sw2.wall:.1f} s |",
        f"| database size | {db_mb:.0f} MB |",
        f"| (input generation, not timed above) | {gen.wall:.1f} s |",
        "",
        "Targets: < 60 s, < 2 GB.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
