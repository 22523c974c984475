"""Five annotators on one data set while a scoring job commits (issue #17): nothing lost, nothing
doubled, no lock error shown to anyone.

The five sessions are five threads of this process, each saving through the dashboard's own write
path (`dashboard.data.write`, one short connection per save, as a served session does: a
Streamlit server runs every session as a thread of one process). Five real browsers would add
five Chromium processes to the same writes, too heavy for the 2-core test machine; the browser
test of two signed-in people (tests/dashboard/test_team_browser.py) covers the page side. The
scoring job is a separate process committing score runs in short transactions, as
`prefsift score` does.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prefsift.storage import annotations as A
from prefsift.storage import connect
from tests.reliability.conftest import scored_synthetic_db
from tests.reliability.test_concurrency import _env, _script

SESSIONS = 5
N_PAIRS = 40
CHANGES = 8  # each annotator changes their mind on this many pairs (a second save over their first)

WRITER = """
import json, os, sys, time
import pyarrow as pa
from prefsift.storage import connect, runs
db, ids, stop, out = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]
done, waits = [], []
k = 0
while not os.path.exists(stop) or k < 3:   # at least 3 commits, then until the annotators finish
    table = pa.table({"pair_id": ids, "value": [k + i / 1000 for i in range(len(ids))]})
    t0 = time.perf_counter()
    with connect(db, timeout_s=60) as con:   # one short transaction per chunk, like a scoring job
        waits.append(time.perf_counter() - t0)   # how long the annotators kept the file from the job
        runs.save_score_run(con, f"w{k:03d}", "syn", "irm", {"k": k}, table)
    done.append(f"w{k:03d}")
    k += 1
    time.sleep(0.05)                          # computing the next chunk: the file is free
json.dump({"done": done, "waits": waits}, open(out, "w"))
"""


@pytest.fixture()
def team_db(tmp_path) -> tuple[Path, list[str]]:
    return scored_synthetic_db(tmp_path, N_PAIRS, "team.duckdb")


def test_five_annotators_while_a_scoring_job_commits(tmp_path, team_db, monkeypatch):
    from prefsift.dashboard import data

    db, ids = team_db
    monkeypatch.setenv("PREFSIFT_DB", str(db))
    monkeypatch.chdir(tmp_path)  # no secrets.toml here: each session is a local curator
    writer = _script(tmp_path, "writer", WRITER)
    stop, w_out = tmp_path / "stop", tmp_path / "writer.json"
    pw = subprocess.Popen(
        [sys.executable, str(writer), str(db), str(tmp_path / "ids.json"), str(stop), str(w_out)],
        env=_env(db),
        cwd=tmp_path,
    )
    lock = threading.Lock()
    stats = {"saves": 0, "busy": 0, "errors": [], "latency": []}
    last: dict[tuple[str, str], dict] = {}  # what each person last saw saved: (who, pair) -> values

    def session(k: int) -> None:
        who = f"annotator-{k}"
        rng = random.Random(k)
        order = list(ids)
        rng.shuffle(order)
        plan = [(p, 0) for p in order] + [(p, 1) for p in rng.sample(ids, CHANGES)]
        seen: dict[str, object] = {}
        for pid, rnd in plan:
            values = {
                "force": rng.choice([None, "keep", "drop"]),
                "swapped": rng.random() < 0.1,
                "note": f"{who} round {rnd} on {pid}",
            }
            time.sleep(rng.uniform(0.05, 0.25))  # reading the pair: people are far slower than this
            while True:
                t0 = time.perf_counter()
                try:
                    out = data.write(A.save_decision, "syn", pid, who, expected=seen.get(pid), **values)
                except Exception as exc:  # noqa: BLE001 - any error a person would see is counted
                    with lock:
                        stats["errors"].append(f"{who} {pid}: {exc!r}")
                    break
                if out is data.WRITE_BUSY:  # the page would show "database busy" and the person retries
                    with lock:
                        stats["busy"] += 1
                    continue
                with lock:
                    stats["saves"] += 1
                    stats["latency"].append(time.perf_counter() - t0)
                    last[(who, pid)] = values
                seen[pid] = out["updated_at"]
                break

    t0 = time.perf_counter()
    threads = [threading.Thread(target=session, args=(k,)) for k in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    stop.touch()
    assert pw.wait(timeout=300) == 0
    job = json.loads(w_out.read_text())
    commits, waits = job["done"], sorted(job["waits"])

    with connect(db, read_only=True) as con:
        dec = A.decisions(con, "syn")
        n_hist = con.execute("SELECT count(*) FROM annotation_history WHERE dataset = 'syn'").fetchone()[0]
        n_hist_distinct = con.execute(
            "SELECT count(DISTINCT (annotator, pair_id, after)) FROM annotation_history WHERE dataset = 'syn'"
        ).fetchone()[0]
        n_scores = con.execute("SELECT count(*) FROM scores WHERE run_id LIKE 'w%'").fetchone()[0]
    stored = {
        (r["annotator"], r["pair_id"]): {
            "force": r["force"],
            "swapped": bool(r["swapped"]),
            "note": r["note"],
        }
        for r in dec.to_dict("records")
    }
    lost = sum(1 for key, v in last.items() if stored.get(key) != v)
    doubled = len(dec) - len(stored) + (n_hist - n_hist_distinct)
    lat = sorted(stats["latency"])
    print(  # the figures docs/RELIABILITY.md quotes (pytest -s)
        f"\nteam concurrency: {SESSIONS} annotators x {N_PAIRS} pairs (+{CHANGES} changes each) = "
        f"{stats['saves']} saves in {wall:.1f} s while a scoring job made {len(commits)} commits "
        f"({n_scores:,} score rows; its wait for the file median {waits[len(waits) // 2] * 1000:.0f} ms, "
        f"max {waits[-1] * 1000:.0f} ms); save latency median {lat[len(lat) // 2] * 1000:.0f} ms, "
        f"p95 {lat[int(len(lat) * 0.95)] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; "
        f"busy notices {stats['busy']}, errors {len(stats['errors'])}, lost {lost}, doubled {doubled}"
    )
    assert stats["errors"] == [], stats["errors"][:3]
    assert stats["busy"] == 0
    assert stats["saves"] == SESSIONS * (N_PAIRS + CHANGES)
    assert len(dec) == SESSIONS * N_PAIRS and lost == 0 and doubled == 0
    assert n_hist == stats["saves"]  # one history row per save, none lost, none doubled
    assert n_scores == len(commits) * N_PAIRS and len(commits) >= 3
