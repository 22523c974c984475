"""`prefsift demo` as a new user meets it: seconds until the dashboard answers, then (unless
--no-wait) the pipeline's stages and total from its background job's status file, with the load.

    python benchmarks/demo_serve.py --work /tmp/demo-serve [--port 8599] [--no-wait] [-- DEMO ARGS]

Run on a fresh model cache to include building the embedded model. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import _common as C


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="an empty folder to run the demo in")
    ap.add_argument("--port", type=int, default=8599)
    ap.add_argument("--no-wait", action="store_true", help="stop once the dashboard answers")
    ap.add_argument("demo_args", nargs="*", help="extra `prefsift demo` arguments (after --)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    sw = C.Stopwatch()
    log = open(work / "demo.log", "wb")
    cmd = [sys.executable, "-m", "prefsift", "demo", "--port", str(args.port), *args.demo_args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{args.port}/_stcore/health"
    while True:
        try:
            if urllib.request.urlopen(url, timeout=2).read().strip() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit(
                "prefsift demo ended before the dashboard answered: "
                + (work / "demo.log").read_text()[-2000:]
            )
        time.sleep(0.2)
    out = {
        "dashboard_answered_s": round(sw.wall, 1),
        "load_at_start": [round(x, 2) for x in load0],
    }
    try:
        if not args.no_wait:
            import duckdb

            loads, row = [], None
            while True:
                time.sleep(5)
                loads.append(os.getloadavg()[0])
                try:
                    con = duckdb.connect(str(work / "prefsift-demo.duckdb"), read_only=True)
                    row = con.execute(
                        "SELECT status, status_path FROM jobs WHERE kind = 'demo' ORDER BY created_at DESC"
                    ).fetchone()
                    con.close()
                except duckdb.Error:
                    continue  # a stage is committing
                if row and row[0] in ("done", "failed", "killed"):
                    break
            status = json.loads(Path(row[1]).read_text())
            out |= {
                "pipeline_status": row[0],
                "until_pipeline_done_s": round(sw.wall, 1),
                "stages": status.get("pipeline"),
                "load_mean": round(sum(loads) / len(loads), 2),
                "load_max": round(max(loads), 2),
            }
    finally:
        proc.terminate()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
