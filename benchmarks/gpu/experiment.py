"""`prefsift experiment` at a size where the paper's effects could show (issue #15, item 5).

    python benchmarks/gpu/experiment.py --shared DATA_DIR --work WORK --out REPORT.md [--budget-s 470]

The product's own commands, one `python -m prefsift … --json` subprocess per stage, through the
stages of benchmarks/reproduce.py (the same functions, not a second pipeline): HH-RLHF harmless
pairs that fit --max-length tokens, split train / val / eval, 20% of train swapped (flagged), then
`warmup` (θ from π_ref), `fit-val` (θ_val), `score` (IRM, LossDiff), `influence` (IF, TIF),
`select` (the LossDiff-IRM 10-90 band), `diagnose` (its chance levels), `evaluate θ` (θ's eval
margin), and `prefsift experiment` on that selection: the selection, the full split, a same-size
random draw per seed and the IF tertiles, trained from θ with matched optimizer steps, judged on
the held-out eval pairs with 95% intervals and paired differences.

Under a time budget: the experiment runs first with the first seed (every arm), then with all
seeds (the first seed's arms are cached, not retrained), killed at --budget-s after this script
started; whatever finished is in the report (state in WORK/state.json, results in the database).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: reproduce, _common

import reproduce as R  # noqa: E402

START = time.monotonic()
SELECTION = ("ldirm", R.RULES["ldirm"])  # the selection under test: LossDiff and IRM 10-90 bands


class GpuRun(R.Run):
    """reproduce.Run with this script's report instead of docs/REPRODUCTION.md's."""

    def save(self) -> None:
        self.state["updated"] = R.now()
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, default=str))
        tmp.replace(self.state_path)
        Path(self.args.out).write_text(report(self.state))


def left(args) -> float:
    return args.budget_s - (time.monotonic() - START)


def select(run: GpuRun) -> dict:
    name, rule = SELECTION
    run.cli("select", "--dataset", run.args.data, "--rule", rule, "--name", name, "--force")
    d = run.cli("diagnose", "--selection", name)
    return {k: v for k, v in d.items() if not k.startswith("_")}


def experiment(run: GpuRun, seeds: list[int]) -> dict:
    a = run.args
    argv = ["experiment", "--selection", SELECTION[0], "--seeds", *map(str, seeds)]
    argv += ["--epochs", str(a.epochs), "--max-length", str(a.max_length), *R.train_args(a)]
    r = run.cli(*argv, timeout=max(left(a), 1.0))
    return {k: v for k, v in r.items() if not k.startswith("_")}


def report(state: dict) -> str:
    from prefsift.experiment import format_experiment

    c, st = state["config"], state["stages"]
    res = {k: v.get("result") for k, v in st.items() if v.get("status") == "done"}
    m = state["machine"]
    L = [
        "## `prefsift experiment` on a GPU (issue #15, item 5)",
        "",
        f"- Command: `{c['command']}`",
        f"- Machine: {m.get('gpu') or 'no GPU'}; CPU {m['cpu']}, {m['cores']} cores; torch {m['torch']}, "
        f"Python {m['python']}. Started {state['started']}, last update {state['updated']}"
        + (f", **finished {state['finished']}**." if state.get("finished") else ", **partial**."),
        f"- Data: HH-RLHF harmless test pairs that fit {c['max_length']} tokens, {c['train']} train "
        f"({c['noise']:.0%} swapped, flagged) / {c['val']} val / {c['eval']} eval; SmolLM2-135M-Instruct "
        f"(the embedded GGUF, dequantised to float32) as π_ref; LoRA, batch {c['batch_size']}, lr {c['lr']:g}, "
        f"beta {c['beta']:g}, {'bf16' if c['bf16'] else 'fp32'} training; experiment {c['epochs']:g} epochs of "
        "the selection arm, every arm the same optimizer steps.",
        "",
    ]
    d = res.get("data")
    if d:
        L.append(f"Ingested {d['ingested']}; {d['fit']} of {d['rows']} rows fit; {d['n_swapped']} swapped.")
    th = res.get("eval_theta")
    if th:
        L.append(
            f"θ on the {th['n_pairs']} eval pairs: mean margin {th['mean_margin']:.3f} (aim >= 0.2), reward "
            f"accuracy {th['reward_accuracy']:.3f}, DPO loss {th['loss']:.4f}."
        )
    sel = res.get("select")
    if sel:
        L.append(
            f"Selection `{SELECTION[0]}` ({SELECTION[1]}): {sel['n_kept']} of {sel['n_total']} train pairs."
        )
        keep = {k: sel.get(k) for k in ("tif", "noise", "n_missing")}  # the chance levels and the noise line
        L += [
            "",
            "From `prefsift diagnose --selection ldirm --json`:",
            "",
            "```json",
            json.dumps(keep, indent=1),
            "```",
        ]
    for key in ("experiment_all", "experiment_first"):
        if res.get(key):
            L += ["", f"### {key.replace('_', ' ')} seed(s)", "", "```", format_experiment(res[key]), "```"]
            break
    L += ["", "| stage | status | wall s |", "| --- | --- | ---: |"]
    for k, v in st.items():
        L.append(f"| {k} | {v.get('status')} | {v.get('wall_s') or 0:.1f} |")
    if state.get("stopped"):
        L += ["", "Stopped: " + state["stopped"][-600:]]
    return "\n".join(L) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", required=True, help="folder holding hh-rlhf-harmless-base-test.jsonl.gz")
    p.add_argument("--work", required=True, help="work folder (database, data, state)")
    p.add_argument("--out", required=True, help="the Markdown report")
    p.add_argument("--budget-s", type=float, default=470.0, help="stop the experiment this long after start")
    p.add_argument("--model", help="π_ref folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--eval", type=int, default=400)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=float, default=2.0, help="experiment epochs (of the selection arm)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--noise", type=float, default=0.2)
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 training (the CPU dry run)")
    args = p.parse_args()
    # the fields reproduce.py's stages read
    args.data, args.fit_length, args.seed, args.data_seed, args.threads = "hh", args.max_length, 0, 0, 0
    args.command = "python benchmarks/gpu/experiment.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    Path(args.work).mkdir(parents=True, exist_ok=True)
    args.resume = False
    run = GpuRun(args)
    try:
        import torch

        run.state["machine"]["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - the report says "no GPU"
        pass
    try:
        run.stage("data", R.prepare_data, run)
        run.stage("warmup", R.warmup, run)
        run.stage("fit_val", R.fit_val, run)
        run.stage("score", R.score, run)
        run.stage("influence", R.influence, run)
        run.stage("select", select, run)
        run.stage("eval_theta", R.evaluate, run, "theta")
        print(f"{left(args):.0f} s of the budget left for the experiment", flush=True)
        run.stage("experiment_first", experiment, run, args.seeds[:1])
        if len(args.seeds) > 1:
            run.stage("experiment_all", experiment, run, args.seeds)
    except R.StageError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        run.state["stopped"] = str(exc)[-2000:]
        run.save()
        return 1
    run.state["finished"] = R.now()
    run.save()
    print(f"done in {time.monotonic() - START:.0f} s: {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
