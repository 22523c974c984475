"""Warm-up θ and validation model θ_val with the real SmolLM2-135M-Instruct on HH-RLHF (CPU, LoRA).

    python benchmarks/training.py [--train 256] [--val 64] [--max-length 512] [--probe-steps 3]

1. Ingest the first rows of the shared HH-RLHF harmless test file (prompt = the shared
   dialogue up to the last "\\n\\nAssistant:", prefsift's implicit format), and assign the
   first `--train` pairs (by row) to 'train', the next `--val` to 'val', the rest to 'eval'.
2. Probe: a few DPO steps of the warm-up in fp32 and with bf16 autocast (`--set bf16=true`),
   to pick the faster precision on this CPU.
3. `prefsift warmup` and `prefsift fit-val` as subprocesses under /usr/bin/time -v: wall time
   and peak RSS of each, step metrics from DuckDB.
Writes benchmarks/results/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C

THREADS = 0  # 0 = torch's default


def cli(db: Path, *argv: str) -> dict:
    """Run `prefsift ...` under /usr/bin/time -v; return its JSON summary + wall/peak RSS."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PREFSIFT_NO_PROGRESS="1", TQDM_DISABLE="1")
    if THREADS:  # on an oversubscribed CPU, OpenMP threads spin-wait: 1 thread was ~4x faster here
        env["OMP_NUM_THREADS"] = str(THREADS)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "prefsift", *argv, "--db", str(db), "--json"]
    with C.Stopwatch() as sw:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=C.ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    out["wall_s"] = sw.wall
    out["peak_rss_gib"] = rss_kb / 2**20
    return out


def setup(db: Path, n_train: int, n_val: int, data: Path) -> dict:
    import pyarrow as pa

    from prefsift.ingest import ingest
    from prefsift.storage import connect
    from prefsift.storage import pairs as pstore

    n_eval = 64
    summary = ingest(data / C.HH_FILE, name="hh", db=db, limit=n_train + n_val + n_eval + 40)
    with connect(db) as con:
        ids = pstore.get_pairs(con, "hh", columns=("pair_id",)).column("pair_id").to_pylist()
        splits = ["train"] * n_train + ["val"] * n_val + ["eval"] * (len(ids) - n_train - n_val)
        pstore.assign_splits(con, "hh", pa.table({"pair_id": ids, "split": splits}))
        counts = dict(
            con.execute("SELECT split, count(*) FROM pairs WHERE dataset='hh' GROUP BY 1").fetchall()
        )
        lengths = con.execute(
            "SELECT avg(length(prompt)), avg(length(chosen)), avg(length(rejected)) FROM pairs "
            "WHERE dataset='hh' AND split='train'"
        ).fetchall()[0]
    return {
        "ingest": {k: summary[k] for k in ("rows_read", "added", "quarantined")},
        "counts": counts,
        "mean_chars": [round(x) for x in lengths],
    }


def metrics_of(db: Path, run_id: str):
    from prefsift.storage import connect
    from prefsift.storage import training as tstore

    with connect(db, read_only=True) as con:
        return tstore.get_metrics(con, run_id)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument(
        "--grad-accum", type=int, default=2, help="per-device batch x accumulation = 4 pairs a step"
    )
    ap.add_argument("--probe-steps", type=int, default=3)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the training processes")
    C.add_data_arg(ap)
    args = ap.parse_args()
    load0 = C.load()
    global THREADS
    THREADS = args.threads

    from prefsift.embedded import smollm2_path

    model = str(smollm2_path())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="prefsift-train-bench-"))
    db = work / "bench.duckdb"
    data = setup(db, args.train, args.val, Path(args.data))
    print("data:", data, flush=True)
    common = [
        "--dataset",
        "hh",
        "--max-length",
        str(args.max_length),
        "--batch-size",
        str(args.batch_size),
        "--set",
        f"gradient_accumulation_steps={args.grad_accum}",
    ]

    # 2. precision probe: same first steps, fp32 vs bf16 autocast
    probe = {}
    if args.precision == "auto":
        for prec in ("fp32", "bf16"):
            r = cli(
                db,
                "warmup",
                "--model",
                model,
                "--name",
                f"probe-{prec}",
                *common,
                "--set",
                f"max_steps={args.probe_steps}",
                "--set",
                f"bf16={'true' if prec == 'bf16' else 'false'}",
            )
            m = metrics_of(db, r["run_id"])
            probe[prec] = {
                "wall_s": r["wall_s"],
                "train_runtime_s": r["runtime_s"],
                "s_per_step": r["runtime_s"] / r["steps"],
                "peak_rss_gib": r["peak_rss_gib"],
                "loss_step1": float(m["loss"].iloc[0]),
            }
            print(prec, probe[prec], flush=True)
        prec = min(probe, key=lambda p: probe[p]["s_per_step"])
    else:
        prec = args.precision
    flag = ["--set", f"bf16={'true' if prec == 'bf16' else 'false'}"]

    # 3. the real runs
    runs = {}
    for cmd, extra in (("warmup", ["--model", model]), ("fit-val", [])):
        r = cli(db, cmd, *extra, *common, *flag)
        m = metrics_of(db, r["run_id"])
        steps = m[m["loss"].notna()] if "loss" in m else m
        runs[cmd] = {
            "wall_s": r["wall_s"],
            "train_runtime_s": r["runtime_s"],
            "steps": r["steps"],
            "pairs": r["n_pairs"],
            "peak_rss_gib": r["peak_rss_gib"],
            "s_per_step": r["runtime_s"] / max(r["steps"], 1),
            "loss_first": float(steps["loss"].iloc[0]),
            "loss_last": float(steps["loss"].iloc[-1]),
            "margin_last": float(steps["rewards/margins"].iloc[-1]),
            "acc_mean_last_quarter": float(
                steps["rewards/accuracies"].iloc[-max(1, len(steps) // 4) :].mean()
            ),
            "metric_rows": int(m.shape[0]),
        }
        print(cmd, runs[cmd], flush=True)
        write_report(
            args, data, probe, prec, runs, " ".join(sys.argv), load0
        )  # after each run: partial results survive


def write_report(args, data, probe, prec, runs, argv, load0: str) -> None:
    lines = [
        "## Training: warm-up θ and validation model θ_val, SmolLM2-135M-Instruct, CPU",
        "",
        f"- {C.about(load0)} 24 GB RAM, no GPU.",
        f"- Command: `python {argv}`",
        f"- Data: HH-RLHF harmless-base test, first rows ingested ({data['ingest']}); splits {data['counts']}; "
        f"mean characters prompt/chosen/rejected {data['mean_chars']}.",
        f"- Settings: LoRA r=16, alpha=32, dropout 0.05, all linear projections; β=0.1; lr 5e-5; "
        f"batch {args.batch_size} x {args.grad_accum} accumulation; max_length {args.max_length} (keep_start); 1 epoch each; fp32 weights; "
        f"TRL 1.16 DPOTrainer, use_cpu; OMP_NUM_THREADS={args.threads or 'default'}.",
        "",
    ]
    if probe:
        lines += [
            "Precision probe (first warm-up steps, same data):",
            "",
            "| precision | s/step | peak RSS GiB | loss step 1 |",
            "|---|---|---|---|",
        ]
        for p, v in probe.items():
            lines.append(f"| {p} | {v['s_per_step']:.1f} | {v['peak_rss_gib']:.2f} | {v['loss_step1']:.4f} |")
        lines += ["", f"Chosen: **{prec}** (faster per step).", ""]
    lines += [
        "| run | pairs | steps | wall s (process) | train s | s/step | peak RSS GiB | loss first→last | "
        "margin last | acc (last quarter) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in runs.items():
        lines.append(
            f"| {name} | {v['pairs']} | {v['steps']} | {v['wall_s']:.0f} | {v['train_runtime_s']:.0f} | "
            f"{v['s_per_step']:.1f} | {v['peak_rss_gib']:.2f} | {v['loss_first']:.4f}→{v['loss_last']:.4f} | "
            f"{v['margin_last']:.4f} | {v['acc_mean_last_quarter']:.2f} |"
        )
    lines += [
        "",
        "Wall s includes Python start-up, model loading, tokenization and saving; peak RSS from "
        "`/usr/bin/time -v` of the `prefsift` process.",
        "",
    ]
    out = C.RESULTS / "training.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
