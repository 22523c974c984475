"""Crash safety machinery of the reliability tests: a workspace (tiny models, synthetic pairs, a
database), the `prefsift` commands, SIGKILL at random points, the read-only census after each kill,
and the comparison of a resumed result with an uninterrupted run.

Used by test_crash.py (slow: random kills), test_crash_ci.py (one kill at a fixed point) and
`python benchmarks/crash.py` (the long run, written to benchmarks/results/crash.md). For each job
(`prefsift score`, `prefsift influence`, `prefsift warmup`):
1. a reference run, uninterrupted, on its own copy of the database;
2. trials on fresh copies: start the job, SIGKILL its process group at a random point (a random
   time after start, or a random time after the k-th result shard / checkpoint appeared), open
   the database read-only and count (pairs, every run's rows: no duplicate, no partial run),
   start it again ... until a run completes; repeat trials until `kills` kills were survived;
3. the resumed result must equal the reference: scores within 1e-9 (float64 models, so batch
   composition cannot matter) with the same pair ids, none missing or duplicated; training:
   the same metrics at every step and the same final adapter weights.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

JOBS = ("score", "influence", "train")
TOL = 1e-9
SESSION = ("train_loss", "num_tokens")  # per-session training counters (see compare)


# ---------------------------------------------------------------- the fixture: models, pairs, database
def build_workspace(base: Path, n_pairs: int, seed: int = 0) -> dict:
    """Tiny models (ref, policy, val) and a database with `n_pairs` synthetic pairs (80% train)."""
    import pyarrow as pa

    from prefsift.ingest import ingest
    from prefsift.storage import connect, pairs
    from tests.conftest import WORDS, build_tiny_model, build_tiny_tokenizer

    base.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer()
    models = {}
    for i, role in enumerate(("ref", "policy", "val")):
        d = base / f"model-{role}"
        build_tiny_model(tok, seed=i).save_pretrained(d)
        tok.save_pretrained(d)
        models[role] = str(d)
    rng = random.Random(seed)
    words = WORDS.split()

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    rows = [{"prompt": text(4, 16), "chosen": text(2, 24), "rejected": text(2, 24)} for _ in range(n_pairs)]
    src = base / "pairs.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    db = base / "clean" / "crash.duckdb"
    ingest(src, "syn", db=db)
    with connect(db) as con:
        ids = pairs.get_pairs(con, "syn", columns=("pair_id",)).column("pair_id").to_pylist()
        n_val = max(8, len(ids) // 5)
        pairs.assign_splits(con, "syn", pa.table({"pair_id": ids[-n_val:], "split": ["val"] * n_val}))
        con.execute("CHECKPOINT")
    return {"db": db, "models": models, "n_pairs": len(ids), "n_train": len(ids) - n_val}


def job_argv(job: str, ws: dict, db: Path) -> list[str]:
    m = ws["models"]
    common = ["--db", str(db), "--dataset", "syn"]
    if job == "score":  # float64: a resumed run batches pairs differently; the maths must not care
        return ["score", *common, "--ref", m["ref"], "--policy", m["policy"], "--val", m["val"],
                "--dtype", "float64", "--device", "cpu", "--batch-tokens", "1024", "--max-length", "128"]  # fmt: skip
    if job == "influence":
        return ["influence", *common, "--policy", m["policy"], "--ref", m["ref"], "--dtype", "float64",
                "--device", "cpu", "--batch-tokens", "512", "--max-length", "128"]  # fmt: skip
    if job == "train":  # a checkpoint every 2 steps so that kills land between and inside them
        return ["warmup", *common, "--model", m["ref"], "--name", "theta", "--device", "cpu", "--batch-size", "4",
                "--max-length", "128", "--set", "save_steps=2", "--set", "save_total_limit=2"]  # fmt: skip
    raise ValueError(job)


def fresh_copy(ws: dict, where: Path) -> Path:
    """A copy of the clean database (no work folder): every trial starts from nothing."""
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    db = where / "crash.duckdb"
    shutil.copy2(ws["db"], db)
    return db


# ---------------------------------------------------------------- running and killing
def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PREFSIFT_NO_PROGRESS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONUNBUFFERED": "1",
    }


def start(argv: list[str], log: Path, status: Path) -> subprocess.Popen:
    env = {**_env(), "PREFSIFT_STATUS_FILE": str(status)}
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "prefsift", *argv], stdout=f, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip


def progress_marks(job: str, db: Path) -> int:
    """How far a job got: result shards on disk (score/influence), or the optimizer step it
    reported in its status file (train: checkpoints rotate, so their count does not grow)."""
    work = db.with_name(db.stem + ".prefsift")
    if job == "train":
        try:
            return int(json.loads(db.with_name("status.json").read_text()).get("done") or 0)
        except (OSError, ValueError):
            return 0
    return len(list((work / "runs").glob("*/shard-*.parquet")))


def run_until_killed(
    job: str, argv: list[str], db: Path, log: Path, rng: random.Random, est_s: float
) -> dict:
    """Start the job and SIGKILL it at a random point. Returns what happened."""
    status = db.with_name("status.json")
    before = progress_marks(job, db)
    proc = start(argv, log, status)
    t0 = time.monotonic()
    mode = rng.choice(["time", "marks", "marks"])
    if mode == "time":
        deadline = t0 + rng.uniform(0.1, est_s)
    else:  # a few more shards / optimizer steps than the run already had
        want = before + rng.randint(1, {"train": 6, "influence": 4, "score": 2}[job])
        deadline = None
    while proc.poll() is None:
        now = time.monotonic()
        if deadline is None and progress_marks(job, db) >= want:
            deadline = now + rng.uniform(0.0, 0.4)  # somewhere inside the next step / shard / commit
        if deadline is not None and now >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"killed": True, "after_s": round(now - t0, 2), "mode": mode}
        if now - t0 > est_s * 6 + 120:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"{job} hung; see {log}")
        time.sleep(0.01)
    return {"killed": False, "rc": proc.returncode, "after_s": round(time.monotonic() - t0, 2), "mode": mode}


def run_to_end(argv: list[str], log: Path, db: Path) -> float:
    t0 = time.monotonic()
    proc = start(argv, log, db.with_name("status.json"))
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"`prefsift {' '.join(argv[:1])}` failed (exit {rc}); log {log}:\n{_tail(log)}")
    return time.monotonic() - t0


def _tail(log: Path, n: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------- what the database holds
def census(db: Path) -> dict:
    """Open the database read-only and count: pairs, and every run's rows (duplicates, partial runs)."""
    from prefsift.storage import connect

    with connect(db, read_only=True, timeout_s=30) as con:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        out = {
            "pairs": q("SELECT count(*) FROM pairs")[0][0],
            "pair_dupes": q("SELECT count(*) - count(DISTINCT (dataset, pair_id)) FROM pairs")[0][0],
            "score_runs": q("SELECT count(*) FROM score_runs")[0][0],
            "logp_runs": q("SELECT count(*) FROM logp_runs")[0][0],
            # a run whose rows do not match its own count would be a half-committed run
            "bad_score_runs": q(
                "SELECT count(*) FROM score_runs r LEFT JOIN (SELECT run_id, count(*) n, count(DISTINCT pair_id) d "
                "FROM scores GROUP BY run_id) s USING (run_id) WHERE coalesce(s.n, 0) <> r.n_pairs OR s.n <> s.d"
            )[0][0],
            "bad_logp_runs": q(
                "SELECT count(*) FROM logp_runs r LEFT JOIN (SELECT run_id, count(*) n, count(DISTINCT pair_id) d "
                "FROM logps GROUP BY run_id) s USING (run_id) WHERE s.n IS NULL OR s.n <> s.d"
            )[0][0],
            "training_runs": q("SELECT count(*) FROM training_runs")[0][0],
            "metric_dupes": q("SELECT count(*) - count(DISTINCT (run_id, step, name)) FROM training_metrics")[
                0
            ][0],
        }
    return out


def results(job: str, db: Path) -> dict:
    """The job's final numbers: {metric: {pair_id: value}} or the training record."""
    from prefsift.storage import connect

    with connect(db, read_only=True, timeout_s=30) as con:
        if job in ("score", "influence"):
            metrics = ("irm", "lossdiff", "policy_loss", "val_loss") if job == "score" else ("if", "tif")
            out = {}
            for m in metrics:
                rows = con.execute(
                    "SELECT s.pair_id, s.value FROM scores s JOIN score_runs r USING (run_id) "
                    "WHERE r.metric = ? AND r.dataset = 'syn'",
                    [m],
                ).fetchall()
                out[m] = rows
            return out
        runs = con.execute("SELECT run_id, status, output_model FROM training_runs").fetchall()
        metrics = con.execute("SELECT step, name, value FROM training_metrics ORDER BY step, name").fetchall()
        models = con.execute("SELECT model_id, name FROM models WHERE name = 'theta'").fetchall()
    weights = {}
    folder = db.with_name(db.stem + ".prefsift") / "models" / "theta"
    for f in sorted(folder.glob("*.safetensors")):
        from safetensors.numpy import load_file

        weights.update(load_file(f))
    return {"runs": runs, "metrics": metrics, "models": models, "weights": weights}


def compare(job: str, got: dict, want: dict, n_expected: int) -> dict:
    """Differences between a resumed result and the reference (all must be zero / within TOL)."""
    import numpy as np

    if job in ("score", "influence"):
        worst, n_compared, problems = 0.0, 0, []
        for m, ref_rows in want.items():
            rows = got.get(m, [])
            ids = [p for p, _ in rows]
            if len(ids) != len(set(ids)):
                problems.append(f"{m}: {len(ids) - len(set(ids))} duplicate pairs")
            g, w = dict(rows), dict(ref_rows)
            if set(g) != set(w) or len(w) != n_expected:
                problems.append(f"{m}: {len(set(w) - set(g))} missing, {len(set(g) - set(w))} extra pairs")
            for p in set(g) & set(w):
                worst = max(worst, abs(g[p] - w[p]))
            n_compared += len(set(g) & set(w))
        return {
            "pairs_compared": n_compared,
            "max_abs_diff": worst,
            "problems": problems,
            "ok": not problems and worst <= TOL,
        }
    problems = []
    if [r[1] for r in got["runs"]] != ["done"] or got["runs"][0][2] is None:
        problems.append(f"training_runs: {got['runs']}")
    # Registered once, under its name. (Its id differs between two folders: the fingerprint also
    # hashes training_args.bin, which records the output folder.)
    if [n for _, n in got["models"]] != [n for _, n in want["models"]]:
        problems.append(f"models: {got['models']} vs {want['models']}")
    gm = {(s, n): v for s, n, v in got["metrics"]}
    wm = {(s, n): v for s, n, v in want["metrics"]}
    # Not compared: wall-clock figures, and two per-session counters: transformers' end-of-run
    # `train_loss` (the mean loss of the steps trained in *this* session) and TRL's `num_tokens`
    # (tokens seen, restarted from 0 by a resume: not in the checkpoint). Both are reported.
    skip = lambda k: "runtime" in k[1] or "per_second" in k[1] or k[1] in ("total_flos",) + SESSION  # noqa: E731
    keys = {k for k in set(gm) | set(wm) if not skip(k)}
    missing = [k for k in keys if k not in gm or k not in wm]
    if missing:
        problems.append(f"metrics missing on one side: {sorted(missing)[:5]}")
    worst_metric = max((abs(gm[k] - wm[k]) for k in keys if k in gm and k in wm), default=0.0)
    if set(got["weights"]) != set(want["weights"]):
        problems.append("adapter tensors differ in names")
    worst_w = max(
        (
            float(np.max(np.abs(got["weights"][k] - want["weights"][k])))
            for k in set(got["weights"]) & set(want["weights"])
        ),
        default=0.0,
    )
    session = {
        n: max((abs(gm[k] - wm[k]) for k in gm.keys() & wm.keys() if k[1] == n), default=0.0) for n in SESSION
    }
    return {
        "session_counter_diff": session,
        "metrics_compared": len(keys),
        "max_abs_diff": worst_metric,
        "max_weight_diff": worst_w,
        "problems": problems,
        "ok": not problems and worst_metric <= 1e-6 and worst_w <= 1e-6,
    }


# ---------------------------------------------------------------- one job: reference + kill trials
@dataclass
class JobReport:
    job: str
    kills: int = 0
    trials: int = 0
    census_checks: int = 0
    census_problems: list = field(default_factory=list)
    comparisons: list = field(default_factory=list)
    ref_seconds: float = 0.0
    kill_points: list = field(default_factory=list)
    resume_failures: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.census_problems
            and not self.resume_failures
            and all(c["ok"] for c in self.comparisons)
            and self.comparisons != []
        )


def crash_job(
    job: str, ws: dict, work: Path, kills: int, seed: int = 0, max_trials: int = 50, log=print
) -> JobReport:
    rng = random.Random(seed)
    rep = JobReport(job)
    ref_db = fresh_copy(ws, work / f"{job}-reference")
    rep.ref_seconds = run_to_end(job_argv(job, ws, ref_db), ref_db.with_name("log.txt"), ref_db)
    want = results(job, ref_db)
    log(f"[{job}] reference run: {rep.ref_seconds:.1f} s")
    expect = ws["n_train"]
    while rep.kills < kills and rep.trials < max_trials:
        rep.trials += 1
        db = fresh_copy(ws, work / f"{job}-trial{rep.trials}")
        argv = job_argv(job, ws, db)
        logf = db.with_name("log.txt")
        while True:
            ev = run_until_killed(job, argv, db, logf, rng, rep.ref_seconds)
            if not ev["killed"]:
                if ev["rc"] != 0:  # the job could not resume: a crash-safety failure, recorded
                    err = [ln for ln in _tail(logf, 60).splitlines() if "Error" in ln or "error:" in ln]
                    rep.resume_failures.append(
                        {"trial": rep.trials, "after_kill": rep.kills, "error": (err or ["?"])[-1]}
                    )
                    log(
                        f"[{job}] trial {rep.trials}: the rerun after kill {rep.kills} FAILED: {rep.resume_failures[-1]}"
                    )
                break
            rep.kills += 1
            rep.kill_points.append(ev["after_s"])
            c = census(db)  # the database opens read-only after every kill
            rep.census_checks += 1
            bad = {
                k: v
                for k, v in c.items()
                if k in ("pair_dupes", "bad_score_runs", "bad_logp_runs", "metric_dupes") and v
            }
            if c["pairs"] != ws["n_pairs"] or bad:
                rep.census_problems.append({"kill": rep.kills, **c})
            log(
                f"[{job}] trial {rep.trials}: kill {rep.kills} after {ev['after_s']} s ({ev['mode']}); census {c}"
            )
            if rep.kills >= kills + 20:  # a job that never finishes between kills: stop killing
                break
        if not ev["killed"] and ev["rc"] == 0:
            cmp = compare(job, results(job, db), want, expect)
            rep.comparisons.append(cmp)
            log(f"[{job}] trial {rep.trials} completed: {cmp}")
    # A last trial may have ended on a kill (kills reached): finish it and compare too.
    if ev["killed"]:
        try:
            run_to_end(argv, logf, db)
        except RuntimeError as exc:
            rep.resume_failures.append(
                {"trial": rep.trials, "after_kill": rep.kills, "error": str(exc)[-300:]}
            )
            return rep
        cmp = compare(job, results(job, db), want, expect)
        rep.comparisons.append(cmp)
        log(f"[{job}] trial {rep.trials} completed after its last kill: {cmp}")
    return rep


# ---------------------------------------------------------------- report (benchmarks/crash.py)
def markdown(reports: list[JobReport], command: str, n_pairs: int, about: str) -> str:
    """The results section: `command` as run, `about` the date / machine / load line."""
    lines = [
        "## Crash safety (SIGKILL at random points, then resume)",
        "",
        f"- command: `{command}`",
        f"- {about}",
        f"- data: {n_pairs} synthetic pairs (80% train), tiny Llama (2 layers, hidden 64) built in code; "
        "scores in float64 (compared within 1e-9), training compared step by step (1e-6)",
        "",
        "| job | kills | trials | reruns that could not resume | read-only opens after a kill | pairs / values compared | max abs diff | rows lost | duplicates | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        n_cmp = sum(c.get("pairs_compared", c.get("metrics_compared", 0)) for c in r.comparisons)
        worst = max((c["max_abs_diff"] for c in r.comparisons), default=float("nan"))
        if r.job == "train":
            worst_w = max((c["max_weight_diff"] for c in r.comparisons), default=float("nan"))
            diff = f"{worst:.1e} (weights {worst_w:.1e})"
        else:
            diff = f"{worst:.1e}"
        lost = sum(1 for c in r.comparisons for p in c["problems"] if "missing" in p)
        dup = sum(1 for c in r.comparisons for p in c["problems"] if "duplicate" in p)
        lines.append(
            f"| {r.job} | {r.kills} | {r.trials} | {len(r.resume_failures)} | {r.census_checks} | {n_cmp:,} | {diff} | {lost} | {dup} | "
            f"{'OK' if r.ok else 'FAIL'} |"
        )
    problems = [(r.job, p) for r in reports for c in r.comparisons for p in c["problems"]]
    problems += [(r.job, f"census after kill: {c}") for r in reports for c in r.census_problems]
    problems += [(r.job, f"rerun could not resume: {f}") for r in reports for f in r.resume_failures]
    lines += [
        "",
        "Problems: " + ("none" if not problems else "; ".join(f"{j}: {p}" for j, p in problems)),
        "",
    ]
    lines.append(
        "Kill points (seconds after start): "
        + "; ".join(f"{r.job}: {', '.join(f'{t:g}' for t in r.kill_points)}" for r in reports)
    )
    return "\n".join(lines) + "\n"


def recompare(job: str, work: Path) -> list[dict]:
    """Compare every completed trial of an earlier run (kept with --work) with its reference again."""
    from prefsift.storage import connect

    ref_db = work / f"{job}-reference" / "crash.duckdb"
    want = results(job, ref_db)
    with connect(ref_db, read_only=True) as con:
        n_expected = con.execute("SELECT count(*) FROM pairs WHERE split = 'train'").fetchall()[0][0]
    out = []
    for d in sorted(work.glob(f"{job}-trial*"), key=lambda p: int(p.name.rsplit("trial", 1)[1])):
        db = d / "crash.duckdb"
        done = census(db)["training_runs" if job == "train" else "score_runs"]
        got = results(job, db)
        if job == "train" and (not got["runs"] or got["runs"][0][1] != "done"):
            out.append({"trial": d.name, "completed": False})
            continue
        if job != "train" and not done:
            out.append({"trial": d.name, "completed": False})
            continue
        out.append({"trial": d.name, "completed": True, **compare(job, got, want, n_expected)})
    return out
