"""Reproduction report on real data: the paper's diagnostics, label noise and downstream DPO.

    python benchmarks/reproduce.py --quick                 # smoke run (48/16/32 pairs, 1 seed)
    python benchmarks/reproduce.py                         # the report (docs/REPRODUCTION.md)
    python benchmarks/reproduce.py --resume                # continue a killed run (same --work)
    python benchmarks/reproduce.py --report-only           # re-render the Markdown from the state
    python benchmarks/reproduce.py --quick --model DIR     # plumbing check with a tiny model folder
    python benchmarks/reproduce.py --data alpaca           # the AlpacaEval report (docs/REPRODUCTION_ALPACA.md)

Everything runs through prefsift's own CLI (`python -m prefsift ... --json`, one subprocess per
stage) on a shared data file (--data hh: the HH-RLHF harmless test pairs; --data alpaca: the
AlpacaEval GPT-4-judged pairs, ties left out), with SmolLM2-135M-Instruct as π_ref:
1. data: a seeded sample of pairs whose prompt + longer response fit in --fit-length tokens,
   split into disjoint train / val / eval; 20% of the train pairs get chosen and rejected
   swapped (seeded), ingested with a `noise` flag (stored in pairs.noise);
2. warm-up θ (DPO from π_ref on train, 1 epoch, LoRA), θ_val (DPO from θ on val, 1 epoch);
3. `prefsift score` (IRM, LossDiff), `prefsift influence` (exact IF, TIF);
4. selections (LossDiff band, IRM band, LossDiff-IRM, TIF, random) and `prefsift diagnose`:
   Pearson with IF, overlap with TIF, share of swapped vs clean pairs dropped;
5. downstream: from θ, DPO on full / LossDiff-IRM / random (same size) / TIF, for every seed,
   judged by `prefsift evaluate` on the held-out eval pairs (reward accuracy, DPO loss).
State (stage results and times) is kept in WORK/state.json after every stage, and the Markdown
report is rewritten after every stage, so a partial run still reports what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
from pathlib import Path

import _common as C
from reproduce_report import CONDITIONS, DATASETS, write_report

PRESETS = {
    "quick": dict(train=48, val=16, eval=32, max_length=128, seeds=[0], epochs=1.0),
    # What the committed report ran: sized for a 2-core CPU shared with other jobs (see the report's
    # CPU times to extrapolate; on a free machine --train 192 --val 48 --eval 128 --max-length 256 fits).
    "full": dict(train=64, val=16, eval=48, max_length=128, seeds=[0, 1, 2], epochs=1.0),
}
RULES = {  # selection name -> rule text (random's fraction is filled in from the LossDiff-IRM size)
    "ld": "lossdiff:10-90",
    "irm": "irm:10-90",
    "ldirm": "lossdiff:10-90 & irm:10-90",
    "tif": "tif",
    "full": "random:1:seed=0",
}


class StageError(RuntimeError):
    pass


class Run:
    """The run's state file, the CLI runner and per-stage timing."""

    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.db = self.work / "repro.duckdb"
        self.state_path = self.work / "state.json"
        self.state = (
            json.loads(self.state_path.read_text()) if args.resume and self.state_path.exists() else {}
        )
        self.state.setdefault("stages", {})
        self.state.setdefault("commands", [])
        self.state["config"] = {k: v for k, v in vars(args).items() if k not in ("resume", "report_only")}
        self.state["machine"] = machine()
        self.state.setdefault("started", now())
        self.save()

    def save(self) -> None:
        self.state["updated"] = now()
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, default=str))
        tmp.replace(self.state_path)
        write_report(self.state, Path(self.args.out))

    def cli(self, *argv: str, timeout: float | None = None) -> dict:
        """`python -m prefsift ARGV --db DB --json`; returns its JSON summary (+ wall_s). A command
        still running after `timeout` seconds is killed (StageError)."""
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            PREFSIFT_NO_PROGRESS="1",
            TQDM_DISABLE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        if self.args.threads:  # torch reads OMP_NUM_THREADS at start-up
            env.update(OMP_NUM_THREADS=str(self.args.threads), MKL_NUM_THREADS=str(self.args.threads))
        cmd = [sys.executable, "-m", "prefsift", *argv, "--db", str(self.db), "--json"]
        shown = "prefsift " + " ".join(shlex.quote(a) for a in argv)
        print(f"[{now()}] $ {shown}", flush=True)
        sw, r0 = C.Stopwatch(), resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=C.ROOT, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.state["commands"].append({"cmd": shown, "wall_s": round(sw.wall, 1), "rc": "timeout"})
            self.save()
            raise StageError(f"{shown} stopped after {timeout:.0f} s (its time budget)") from exc
        wall, r1 = sw.wall, resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU seconds (user + system) as well: on a shared machine wall time depends on the other jobs
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        self.state["commands"].append(
            {
                "cmd": shown,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "rc": proc.returncode,
                "threads": self.args.threads or "default",
            }
        )
        if proc.returncode != 0:
            self.save()
            raise StageError(f"{shown} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        text = proc.stdout
        out = json.loads(text[text.index("{") :])
        out["wall_s"] = wall
        print(f"    {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        return out

    def stage(self, name: str, fn, *a, **kw):
        """Run a stage once: its result and wall time land in the state (skipped if already done)."""
        st = self.state["stages"].get(name)
        if st and st.get("status") == "done":
            return st["result"]
        sw, c0 = C.Stopwatch(), cpu_seconds()
        self.state["stages"][name] = {"status": "running", "started": now()}
        self.save()
        try:
            result = fn(*a, **kw)
        except Exception as exc:
            self.state["stages"][name] = {
                "status": "failed",
                "error": str(exc)[-3000:],
                "wall_s": sw.wall,
            }
            self.save()
            raise
        self.state["stages"][name] = {
            "status": "done",
            "result": result,
            "wall_s": sw.wall,
            "cpu_s": cpu_seconds() - c0,
            "finished": now(),
            "load_avg": round(os.getloadavg()[1], 1),  # 5-minute load average at the stage's end
        }
        self.save()
        return result


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine() -> dict:
    import torch

    return {
        "cpu": C.cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------- stage 1: data
def read_pairs(data: str, shared: Path = C.SHARED_DATA):
    """(raw row count, [(row index, Pair)], rows that are not a pair) of the shared data set `data`
    in the folder `shared`, read as `prefsift ingest` reads it."""
    return C.prefsift_pairs(Path(shared) / DATASETS[data]["file"])


def prepare_data(run: Run) -> dict:
    """Sample pairs that fit, split them, swap 20% of train; write jsonl files and ingest them."""
    import numpy as np
    from transformers import AutoTokenizer

    a = run.args
    tok = AutoTokenizer.from_pretrained(model_path(a))
    n_rows, good, n_bad = read_pairs(a.data, Path(a.shared))
    # one batched call per side (the Rust tokenizer is much faster on a list than string by string)
    ids_c = tok([p.prompt + p.chosen for _, p in good])["input_ids"]
    ids_r = tok([p.prompt + p.rejected for _, p in good])["input_ids"]
    lengths = [1 + max(len(c), len(r)) for c, r in zip(ids_c, ids_r)]  # +1: TRL appends EOS
    cands = [(i, p, n) for (i, p), n in zip(good, lengths) if a.fit_length <= 0 or n <= a.fit_length]
    need = a.train + a.val + a.eval
    if len(cands) < need:
        raise StageError(f"only {len(cands)} {a.data} pairs fit in {a.fit_length} tokens, need {need}")
    rng = np.random.default_rng(a.data_seed)
    order = rng.permutation(len(cands))[:need]
    parts = {
        "train": order[: a.train],
        "val": order[a.train : a.train + a.val],
        "eval": order[a.train + a.val :],
    }
    swapped = set(rng.choice(a.train, size=round(a.noise * a.train), replace=False).tolist())
    data_dir = run.work / "data"
    data_dir.mkdir(exist_ok=True)
    ingested, tokens = {}, {}
    for split, idx in parts.items():
        path = data_dir / f"{a.data}_{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for j, k in enumerate(idx):
                i, p, _n = cands[k]
                noisy = split == "train" and j in swapped
                chosen, rejected = (p.rejected, p.chosen) if noisy else (p.chosen, p.rejected)
                f.write(
                    json.dumps(
                        {
                            "prompt": p.prompt,
                            "chosen": chosen,
                            "rejected": rejected,
                            "noise": bool(noisy),
                            "source_row": i,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        tokens[split] = float(np.mean([cands[k][2] for k in idx]))
        ingested[split] = run.cli("ingest", str(path), "--name", a.data, "--split", split)["added"]
    return {
        "rows": n_rows,
        "bad": n_bad,
        "fit": len(cands),
        "fit_length": a.fit_length,
        "length_pcts": {str(q): float(np.percentile(lengths, q)) for q in (50, 75, 90)},
        "ingested": ingested,
        "n_swapped": len(swapped),
        "mean_tokens": tokens,
    }


# ---------------------------------------------------------------- stage 2-3: models and scores
def train_args(a, *, seed: int | None = None) -> list[str]:
    out = [
        "--batch-size",
        str(a.batch_size),
        "--lr",
        str(a.lr),
        "--seed",
        str(a.seed if seed is None else seed),
        "--beta",  # every stage runs at one beta: training, scoring, influence and evaluation
        str(a.beta),
    ]
    if a.bf16:
        out += ["--set", "bf16=true"]
    return out


def model_path(a) -> str:
    from prefsift.embedded import smollm2_path

    return a.model or str(smollm2_path())


def warmup(run: Run) -> dict:
    a = run.args
    r = run.cli(
        "warmup",
        "--dataset",
        a.data,
        "--model",
        model_path(a),
        "--name",
        "theta",
        "--max-length",
        str(a.max_length),
        *train_args(a),
    )
    return pick(r, "model_id", "n_pairs", "steps", "loss", "train_loss", "runtime_s", "wall_s")


def fit_val(run: Run) -> dict:
    r = run.cli(
        "fit-val",
        "--dataset",
        run.args.data,
        "--policy",
        "theta",
        "--name",
        "theta_val",
        *train_args(run.args),
    )
    return pick(r, "model_id", "n_pairs", "steps", "loss", "train_loss", "runtime_s", "wall_s")


def score(run: Run) -> dict:
    a = run.args
    r = run.cli(
        "score",
        "--dataset",
        a.data,
        "--policy",
        "theta",
        "--val",
        "theta_val",
        "--ref",
        "ref",
        "--max-length",
        str(run.args.max_length),
        "--beta",
        str(a.beta),
    )
    return {k: v for k, v in r.items() if not k.startswith("_")}


def influence(run: Run) -> dict:
    a = run.args
    r = run.cli(
        "influence",
        "--dataset",
        a.data,
        "--policy",
        "theta",
        "--ref",
        "ref",
        "--max-length",
        str(run.args.max_length),
        "--beta",
        str(run.args.beta),
    )
    return {k: v for k, v in r.items() if not k.startswith("_")}


def truncation(run: Run) -> dict:
    """Pairs flagged truncated in the cached reference log-prob runs, per split."""
    from prefsift.storage import connect
    from prefsift.storage import runs as rstore

    out = {}
    with connect(run.db, read_only=True) as con:
        runs = rstore.list_logp_runs(con, run.args.data)
        for _, r in runs.iterrows():
            t = rstore.get_logps(con, r["run_id"]).to_pandas()
            cfg = json.loads(r["config"]) if isinstance(r["config"], str) else (r["config"] or {})
            key = f"{r['model'] or r['model_id'][:12]} on {cfg.get('split', 'all')}"
            out[key] = {"n": len(t), "truncated": int(t["truncated"].sum())}
    return out


# ---------------------------------------------------------------- stage 4: selections and diagnostics
def selections(run: Run) -> dict:
    out = {}
    for name in ("ld", "irm", "ldirm", "tif", "full"):
        out[name] = select(run, name, RULES[name])
    n_train = out["full"]["n_kept"]
    out["_fraction"] = out["ldirm"]["n_kept"] / n_train
    for seed in run.args.seeds:
        out[f"random-s{seed}"] = select(run, f"random-s{seed}", random_rule(out["_fraction"], seed))
    return out


def random_rule(fraction: float, seed: int) -> str:
    return f"random:{fraction:.12f}:seed={seed}"


def select(run: Run, name: str, rule: str) -> dict:
    run.cli("select", "--dataset", run.args.data, "--rule", rule, "--name", name, "--force")
    d = run.cli("diagnose", "--selection", name)
    return {
        "rule": rule,
        "n_kept": d["n_kept"],
        "n_total": d["n_total"],
        "fraction": d["fraction"],
        "tif": d.get("tif"),
        "noise": d.get("noise"),
        "resolved": d.get("resolved"),
        "evidence": d.get("evidence"),  # intervals, chance levels, AUROC (the same for every rule)
    }


def independent_check(run: Run) -> dict:
    """Pearson / overlap recomputed here from the stored scores (numpy), next to prefsift's own."""
    import numpy as np

    from prefsift.storage import connect
    from prefsift.storage.engine import get_scores

    with connect(run.db, read_only=True) as con:
        df = get_scores(con, run.args.data)
    out = {"n": len(df)}
    f = df["if"].to_numpy(float)
    for m in ("irm", "lossdiff"):
        out[f"pearson_{m}"] = float(np.corrcoef(df[m].to_numpy(float), f)[0, 1])

    def band(x):
        lo, hi = np.percentile(x, [10, 90])
        return (x >= lo) & (x <= hi)

    tif = df["tif"].to_numpy(float) > 0.5
    masks = {"lossdiff": band(df["lossdiff"].to_numpy(float)), "irm": band(df["irm"].to_numpy(float))}
    masks["lossdiff_irm"] = masks["lossdiff"] & masks["irm"]
    for m, k in masks.items():
        out[f"overlap_{m}"] = float((k & tif).sum() / min(k.sum(), tif.sum()))
    out["tif_share"] = float(tif.mean())
    return out


# ---------------------------------------------------------------- stage 5: downstream
def evaluate(run: Run, model: str) -> dict:
    r = run.cli(
        "evaluate", model, "--dataset", run.args.data, "--split", "eval", "--beta", str(run.args.beta)
    )
    return pick(r, "model_id", "n_pairs", "loss", "reward_accuracy", "mean_margin", "wall_s")


def downstream(run: Run, cond: str, seed: int) -> dict:
    a = run.args
    sel = f"random-s{seed}" if cond == "random" else cond
    name = f"dpo-{cond}-s{seed}"
    t = run.cli(
        "train", "--selection", sel, "--name", name, "--epochs", str(a.epochs), *train_args(a, seed=seed)
    )
    e = evaluate(run, name)
    return {
        "selection": sel,
        "n_pairs": t["n_pairs"],
        "steps": t["steps"],
        "train_loss": t.get("train_loss"),
        "train_wall_s": t["wall_s"],
        "eval": e,
    }


def pick(d: dict, *keys: str) -> dict:
    return {k: d.get(k) for k in keys}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        choices=sorted(DATASETS),
        default="hh",
        help="shared data set: hh (HH-RLHF harmless test) or alpaca (AlpacaEval GPT-4-judged pairs)",
    )
    C.add_data_arg(p, "--shared")
    p.add_argument("--quick", action="store_true", help="smoke sizes: " + json.dumps(PRESETS["quick"]))
    p.add_argument("--train", type=int)
    p.add_argument("--val", type=int)
    p.add_argument("--eval", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument(
        "--fit-length",
        type=int,
        help="keep pairs of at most this many tokens (default max_length; "
        "0 = no filter, long pairs get truncated)",
    )
    p.add_argument(
        "--seeds", type=int, nargs="*", help="downstream seeds (none: diagnostics only, no downstream DPO)"
    )
    p.add_argument("--epochs", type=float, help="downstream epochs")
    p.add_argument(
        "--model",
        help="reference model folder (default: SmolLM2-135M-Instruct; a tiny model "
        "with its tokenizer only to check the plumbing)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS of every prefsift process "
        "(0 = torch's default); 1 wastes no CPU on spinning threads when the machine is oversubscribed",
    )
    p.add_argument("--batch-size", type=int, default=8)
    # 2e-4, not prefsift's LoRA default 5e-5: with a few dozen pairs there are only a handful of
    # optimizer steps, and θ must move away from π_ref for IRM / LossDiff / IF to carry any signal.
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of warm-up and θ_val training")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument(
        "--noise", type=float, default=0.2, help="share of train pairs with chosen/rejected swapped"
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in training (--set bf16=true)")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    p.add_argument("--work", help="work folder (database, data, state); default /tmp/repro/<quick|full>")
    p.add_argument(
        "--out", help="Markdown report (default docs/REPRODUCTION.md; quick: WORK/REPRODUCTION.md)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --work, skipping finished stages"
    )
    p.add_argument(
        "--report-only", action="store_true", help="only re-render the Markdown from WORK/state.json"
    )
    args = p.parse_args()
    preset = PRESETS["quick" if args.quick else "full"]
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.fit_length is None:
        args.fit_length = args.max_length
    size = "quick" if args.quick else "full"
    args.work = args.work or (f"/tmp/repro/{size}" if args.data == "hh" else f"/tmp/repro/{args.data}-{size}")
    args.out = args.out or (
        str(Path(args.work) / "REPRODUCTION.md")
        if args.quick
        else str(C.ROOT / DATASETS[args.data]["report"])
    )
    args.command = "python benchmarks/reproduce.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    source = Path(args.shared) / DATASETS[args.data]["file"]
    if not source.exists():
        print(f"{source} not found: the shared data folder is needed", file=sys.stderr)
        return 2
    if args.report_only:
        state = json.loads((Path(args.work) / "state.json").read_text())
        write_report(state, Path(args.out))
        print(f"written: {args.out}")
        return 0
    run = Run(args)
    try:
        run.stage("data", prepare_data, run)
        run.stage("warmup", warmup, run)
        run.stage("fit_val", fit_val, run)
        run.stage("score", score, run)
        run.stage("influence", influence, run)
        run.stage("truncation", truncation, run)
        run.stage("eval_theta", evaluate, run, "theta")  # before diagnose: its evidence reads θ's eval (C1)
        run.stage("selections", selections, run)
        run.stage("check", independent_check, run)
        for seed in args.seeds:  # seeds outermost: a partial run holds whole seeds
            for cond in args.conditions:
                run.stage(f"dpo:{cond}:{seed}", downstream, run, cond, seed)
    except StageError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        run.state["stopped"] = str(exc)[-2000:]
        run.save()
        return 1
    run.state["finished"] = now()
    run.save()
    print(f"done: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
