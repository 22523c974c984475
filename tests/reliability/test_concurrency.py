"""Concurrency: a job committing in short transactions and the dashboard reading and saving at
the same time, in two processes; two jobs started at once on one database.

DuckDB lets one process hold a database file at a time, so the promise is made by short
connections with a bounded retry (storage.connect) and the dashboard's own retry and write
helpers (dashboard.data._retrying, data.write): no exception escapes, every write lands, and every read
is answered (after at most a few "busy" retries).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prefsift.errors import UserError
from prefsift.joblock import job_lock
from prefsift.storage import connect
from prefsift.storage import runs as runs_store
from tests.reliability.conftest import scored_synthetic_db

ROOT = Path(__file__).resolve().parents[2]
N_PAIRS = 120
WRITER_COMMITS = 16
READER_ROUNDS = 16

WRITER = """
import json, random, sys, time
import pyarrow as pa
from prefsift.storage import connect, runs
db, ids, n, out = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), sys.argv[4]
random.seed(0)
done = []
for k in range(n):
    table = pa.table({"pair_id": ids, "value": [k + i / 1000 for i in range(len(ids))]})
    with connect(db, timeout_s=60) as con:   # one short transaction per chunk, like a scoring job
        runs.save_score_run(con, f"w{k:03d}", "syn", "irm", {"k": k}, table)
    done.append(f"w{k:03d}")
    time.sleep(random.uniform(0.02, 0.12))   # computing the next chunk: the file is free
json.dump(done, open(out, "w"))
"""

READER = """
import json, os, sys, time, traceback, warnings
warnings.simplefilter("ignore")
import logging; logging.disable(logging.WARNING)   # streamlit's "no runtime" chatter
from prefsift import storage
from prefsift.dashboard import data
from prefsift.storage import annotations, engine, explore, pairs, runs, selections
ids, rounds, out = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
BUSY = object()
stats = {"reads": 0, "busy_retries": 0, "selections": [], "annotations": 0, "errors": []}

def attempt(fn, *a):              # a short read-only connection, as the dashboard's reads open
    with storage.connect(data.db_path(), read_only=True, timeout_s=2.0) as con:
        return fn(con, *a)

def read(fn, *a):
    for _ in range(30):            # the page would simply show this on its next refresh
        v = data._retrying(lambda: attempt(fn, *a), BUSY)
        if v is not BUSY:
            stats["reads"] += 1
            return v
        stats["busy_retries"] += 1
    raise RuntimeError("a read stayed busy for 30 tries")

try:
    for j in range(rounds):
        assert "syn" in set(read(pairs.list_datasets)["name"])
        scores = read(engine.get_scores, "syn")
        assert len(scores) == len(ids)
        read(explore.pair_fates, "syn", ids[j % len(ids)])
        read(explore.score_runs, "syn")
        if j % 4 == 0:             # "Save selection" on the Tune page
            name = f"sel{j:03d}"
            out_sel = data.write(selections.create_selection, name, "syn", "irm:10-90", None, "train", True, False)
            stats["selections"].append([name, out_sel["n_kept"], out_sel["score_runs"]["irm"]])
        if j % 4 == 2:             # a note in the inspector
            data.decide("syn", ids[j], expected=annotations.UNCHECKED, flag="ok", note=f"note {j}")
            stats["annotations"] += 1
except Exception:
    stats["errors"].append(traceback.format_exc())
json.dump(stats, open(out, "w"))
"""


def _script(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / f"{name}.py"
    p.write_text(textwrap.dedent(body))
    return p


def _env(db: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFSIFT_DB": str(db),
        "PREFSIFT_NO_PROGRESS": "1",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }


@pytest.fixture()
def syn_db(tmp_path) -> tuple[Path, list[str]]:
    return scored_synthetic_db(tmp_path, N_PAIRS, "c.duckdb")


def test_dashboard_reads_and_saves_while_a_job_commits(tmp_path, syn_db):
    db, ids = syn_db
    writer = _script(tmp_path, "writer", WRITER)
    reader = _script(tmp_path, "reader", READER)
    w_out, r_out = tmp_path / "writer.json", tmp_path / "reader.json"
    env = _env(db)
    pw = subprocess.Popen([sys.executable, str(writer), str(db), str(tmp_path / "ids.json"), str(WRITER_COMMITS), str(w_out)], env=env, cwd=tmp_path)  # fmt: skip
    pr = subprocess.Popen([sys.executable, str(reader), str(tmp_path / "ids.json"), str(READER_ROUNDS), str(r_out)], env=env, cwd=tmp_path)  # fmt: skip
    assert pw.wait(timeout=300) == 0
    assert pr.wait(timeout=300) == 0
    written = json.loads(w_out.read_text())
    stats = json.loads(r_out.read_text())
    assert stats["errors"] == [], stats["errors"][0]
    print(  # the counts docs/RELIABILITY.md quotes (pytest -s)
        f"\nconcurrency: {WRITER_COMMITS} job commits, {stats['reads']} dashboard reads "
        f"({stats['busy_retries']} busy retries), {len(stats['selections'])} selections and "
        f"{stats['annotations']} annotations saved, 0 errors"
    )
    assert written == [f"w{k:03d}" for k in range(WRITER_COMMITS)]
    assert stats["reads"] == 4 * READER_ROUNDS

    # every write of both processes landed, whole
    with connect(db, read_only=True) as con:
        run_ids = set(runs_store.list_score_runs(con, "syn")["run_id"])
        assert set(written) <= run_ids
        n_scores = con.execute("SELECT count(*) FROM scores WHERE run_id LIKE 'w%'").fetchall()[0][0]
        assert n_scores == WRITER_COMMITS * N_PAIRS
        sels = dict(con.execute("SELECT name, n_kept FROM selections").fetchall())
        members = dict(
            con.execute("SELECT selection, count(*) FROM selection_members GROUP BY selection").fetchall()
        )
        n_ann = con.execute("SELECT count(*) FROM annotations WHERE dataset = 'syn'").fetchall()[0][0]
    assert len(stats["selections"]) == READER_ROUNDS // 4
    for name, n_kept, _run in stats["selections"]:
        assert sels[name] == n_kept == members[name]
    assert n_ann == stats["annotations"] == READER_ROUNDS // 4


LOCKER = """
import json, os, sys, time
from prefsift.joblock import job_lock
from prefsift.errors import UserError
from prefsift.storage import connect
db, tag, wait, go, out, peer_out = sys.argv[1], sys.argv[2], sys.argv[3] == "1", *sys.argv[4:7]
open(out + ".ready", "w").close()      # imported: the test starts both only when both are ready
while not os.path.exists(go):          # start both at the same moment
    time.sleep(0.005)
rec = {"tag": tag}
try:
    with job_lock(db, f"test {tag}", wait=wait):
        rec["start"] = time.time()
        for i in range(5):             # a job's short commits
            with connect(db, timeout_s=60) as con:
                con.execute("INSERT INTO annotation_decisions (dataset, pair_id, annotator, flag, note) "
                            "VALUES (?, ?, ?, 'ok', ?)", ["syn", f"{tag}-{i}", tag, tag])
            time.sleep(0.3)
        rec["end"] = time.time()
        deadline = time.time() + 120   # refuse: hold the lock until the other job has tried it,
        while not wait and not os.path.exists(peer_out) and time.time() < deadline:
            time.sleep(0.01)           # however slowly a loaded machine ran it
except UserError as exc:
    rec["refused"] = str(exc)
with open(out + ".tmp", "w") as f:
    json.dump(rec, f)
os.replace(out + ".tmp", out)
"""


@pytest.mark.parametrize("wait", [False, True], ids=["refuse", "queue"])
def test_two_jobs_at_once_refuse_or_queue(tmp_path, syn_db, wait):
    db, _ = syn_db
    script = _script(tmp_path, "locker", LOCKER)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(db),
                tag,
                "1" if wait else "0",
                str(go),
                str(tmp_path / f"{tag}.json"),
                str(tmp_path / f"{peer}.json"),
            ],
            env=_env(db),
            cwd=tmp_path,
        )
        for tag, peer in (("a", "b"), ("b", "a"))
    ]
    deadline = time.time() + 120
    while not all((tmp_path / f"{t}.json.ready").exists() for t in "ab"):  # both imported and polling
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    for p in procs:
        assert p.wait(timeout=180) == 0
    recs = [json.loads((tmp_path / f"{t}.json").read_text()) for t in ("a", "b")]
    ran = [r for r in recs if "start" in r]
    with connect(db, read_only=True) as con:  # the database opens, and holds exactly the jobs' rows
        rows = con.execute("SELECT pair_id FROM annotation_decisions ORDER BY pair_id").fetchall()
    if wait:
        assert len(ran) == 2
        first, second = sorted(ran, key=lambda r: r["start"])
        assert second["start"] >= first["end"]  # queued: never both inside the lock
        assert len(rows) == 10
    else:
        assert len(ran) == 1
        (refused,) = [r for r in recs if "refused" in r]
        assert "another prefsift job is running" in refused["refused"] and "--wait" in refused["refused"]
        assert f"test {ran[0]['tag']}" in refused["refused"]  # names the job holding the lock
        assert [r[0] for r in rows] == [f"{ran[0]['tag']}-{i}" for i in range(5)]


class _ProbeAfterEveryCall:
    """Stands in for a module (os, fcntl): after each call, runs `probe` (the other job's attempt)."""

    def __init__(self, module, probe):
        self._module, self._probe = module, probe

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            try:
                return attr(*a, **kw)
            finally:
                self._probe()

        return call


def test_the_holder_is_named_at_every_step_of_taking_the_lock(tmp_path, monkeypatch):
    """Deterministic: a second job tries the lock after every system call the first one makes
    while taking it. Each try either gets a free lock or is refused naming the first job, never
    "pid None: None" (the holder's details used to be written after flock, in a window)."""
    import prefsift.joblock as jl

    db = tmp_path / "p.duckdb"
    seen: list[str] = []
    probing = False

    def probe():
        nonlocal probing
        if probing:
            return
        probing = True
        try:
            with jl.job_lock(db, "the probe"):
                seen.append("free")
        except UserError as exc:
            seen.append(str(exc))
        finally:
            probing = False

    monkeypatch.setattr(jl, "os", _ProbeAfterEveryCall(os, probe))
    monkeypatch.setattr(jl, "fcntl", _ProbeAfterEveryCall(jl.fcntl, probe))
    with jl.job_lock(db, "the first job"):
        probe()
        assert [p.name for p in tmp_path.iterdir()] == ["p.duckdb.joblock"]  # one file, one name
    monkeypatch.undo()
    refused = [m for m in seen if m != "free"]
    assert refused, seen
    for msg in refused:
        assert f"pid {os.getpid()}: the first job" in msg, msg
    with jl.job_lock(db, "after"):  # and released cleanly
        pass


def test_job_lock_released_when_the_holder_is_killed(tmp_path):
    """An OS lock: a job killed with SIGKILL never leaves a stale lock behind."""
    db = tmp_path / "k.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from prefsift.joblock import job_lock\nwith job_lock({str(db)!r}, 'victim'):\n"
         "    print('held', flush=True)\n    import time; time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env=_env(db),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="victim"):
            with job_lock(db, "second"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with job_lock(db, "after the kill"):
        pass


def test_heavy_commands_refuse_or_queue_behind_the_lock_in_process(
    tiny_db, tiny_model_dir, tiny_model_dir_b, capsys
):
    """The CI variant of the test below: the same real commands, run in this process (no new
    interpreter each): refused while the lock is held (exit 2, one line, nothing written);
    `score --wait` blocks until the holder lets go, then completes."""
    import threading

    from prefsift.cli import main

    db = str(tiny_db)
    ref, pol = str(tiny_model_dir), str(tiny_model_dir_b)
    base = ["--db", db, "--dataset", "tiny", "--device", "cpu", "--max-length", "64"]
    commands = {
        "score": ["score", *base, "--ref", ref, "--policy", pol],
        "influence": ["influence", *base, "--ref", ref, "--policy", pol],
        "warmup": ["warmup", *base, "--model", ref, "--name", "theta"],
    }
    queued: dict = {}
    with job_lock(db, "a long job"):
        for name, argv in commands.items():
            assert main(argv) == 2, name
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "another prefsift job is running" in err[0], (name, err)
            assert "a long job" in err[0] and "--wait" in err[0]
        waiter = threading.Thread(target=lambda: queued.update(rc=main([*commands["score"], "--wait"])))
        waiter.start()
        seen = ""
        deadline = time.monotonic() + 300  # a bound, not a timing assumption: it waits for the line
        while "waiting for the job lock" not in seen and time.monotonic() < deadline and waiter.is_alive():
            time.sleep(0.05)
            seen += capsys.readouterr().err
        assert "waiting for the job lock" in seen and waiter.is_alive()  # queued, not refused
        with connect(db, read_only=True) as con:  # nothing computed by the refused or queued jobs
            assert con.execute("SELECT count(*) FROM score_runs").fetchone()[0] == 0
            assert con.execute("SELECT count(*) FROM training_runs").fetchone()[0] == 0
        assert "rc" not in queued  # still behind the lock
    waiter.join(timeout=600)
    assert queued.get("rc") == 0
    with connect(db, read_only=True) as con:
        metrics = {r[0] for r in con.execute("SELECT metric FROM score_runs").fetchall()}
    assert {"irm", "policy_loss"} <= metrics


@pytest.mark.e2e
@pytest.mark.slow
def test_heavy_commands_refuse_or_queue_behind_the_lock(tiny_db, tiny_model_dir, tiny_model_dir_b):
    """The real commands: while a job holds the lock, `score`, `influence` and `warmup` refuse
    with one clear line (exit 2) and write nothing; `score --wait` queues, then completes."""
    db = str(tiny_db)
    ref, pol = str(tiny_model_dir), str(tiny_model_dir_b)
    base = ["--db", db, "--dataset", "tiny", "--device", "cpu"]
    commands = {
        "score": ["score", *base, "--ref", ref, "--policy", pol, "--max-length", "64"],
        "influence": ["influence", *base, "--ref", ref, "--policy", pol, "--max-length", "64"],
        "warmup": ["warmup", *base, "--model", ref, "--name", "theta", "--max-length", "64"],
    }
    env = _env(tiny_db)

    def launch(argv):
        return subprocess.Popen([sys.executable, "-m", "prefsift", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip

    with job_lock(db, "a long job"):
        procs = {k: launch(v) for k, v in commands.items()}
        outs = {k: p.communicate(timeout=600) for k, p in procs.items()}
        for k, p in procs.items():
            err = outs[k][1].strip().splitlines()
            assert p.returncode == 2, (k, outs[k])
            assert (
                "another prefsift job is running" in err[-1]
                and "a long job" in err[-1]
                and "--wait" in err[-1]
            )
            assert "Traceback" not in outs[k][1]
        queued = launch([*commands["score"], "--wait"])
        line = queued.stderr.readline()  # printed once the lock is found held
        assert "waiting for the job lock" in line and queued.poll() is None
        with connect(db, read_only=True) as con:  # nothing was computed by the refused or queued jobs
            assert con.execute("SELECT count(*) FROM score_runs").fetchall()[0][0] == 0
            assert con.execute("SELECT count(*) FROM training_runs").fetchall()[0][0] == 0
    out, err = queued.communicate(timeout=600)
    assert queued.returncode == 0, err[-2000:]
    with connect(db, read_only=True) as con:
        metrics = {r[0] for r in con.execute("SELECT metric FROM score_runs").fetchall()}
    assert {"irm", "policy_loss"} <= metrics
