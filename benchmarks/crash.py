"""Crash safety, the long run: the kill / resume / compare of tests/reliability/test_crash.py
(its machinery: tests/reliability/crashkit.py) with more kills and pairs; writes the results file.

    python benchmarks/crash.py --kills 10 --pairs 300            # writes benchmarks/results/crash.md
    python benchmarks/crash.py --jobs score --kills 3 --pairs 120 --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import _common as C

from tests.reliability import crashkit as K


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", nargs="+", choices=K.JOBS, default=list(K.JOBS))
    ap.add_argument("--kills", type=int, default=10, help="kills to survive per job (default 10)")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    ap.add_argument("--out", default=str(C.RESULTS / "crash.md"), help="results file")
    ap.add_argument(
        "--recompare", metavar="WORK", help="only compare the kept trials of an earlier --work run"
    )
    args = ap.parse_args(argv)
    if args.recompare:
        for job in args.jobs:
            for row in K.recompare(job, Path(args.recompare)):
                print(job, json.dumps(row, default=str))
        return 0
    load0, sw = C.load(), C.Stopwatch()
    with tempfile.TemporaryDirectory(prefix="prefsift-crash-") as tmp:
        work = Path(args.work or tmp)
        ws = K.build_workspace(work / "ws", args.pairs, args.seed)
        reports = [K.crash_job(j, ws, work, args.kills, args.seed + i) for i, j in enumerate(args.jobs)]
    cmd = f"python benchmarks/crash.py --kills {args.kills} --pairs {args.pairs} --jobs {' '.join(args.jobs)} --seed {args.seed}"
    text = K.markdown(reports, cmd, args.pairs, f"{C.about(load0)} Total {sw.wall / 60:.1f} min.")
    print(text)
    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
