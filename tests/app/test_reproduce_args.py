"""benchmarks/reproduce.py runs every stage at the --beta it is given (bug 15c: only `influence`
got it; training, scoring and evaluation ran at the default 0.1)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _reproduce_module():
    if str(ROOT / "benchmarks") not in sys.path:  # where the script finds _common, as when it runs
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "prefsift_bench_reproduce", ROOT / "benchmarks" / "reproduce.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class RecordingRun:
    """Stands in for reproduce.Run: records each prefsift command line instead of running it."""

    def __init__(self, args) -> None:
        self.args, self.commands = args, []

    def cli(self, *argv: str) -> dict:
        self.commands.append(list(argv))
        return {"n_pairs": 1, "steps": 1, "wall_s": 0.0}


def test_every_stage_gets_the_beta():
    rp = _reproduce_module()
    args = argparse.Namespace(
        data="hh", model="m", max_length=64, batch_size=2, lr=1e-4, seed=0, bf16=False, beta=0.37, epochs=1.0
    )
    run = RecordingRun(args)
    rp.warmup(run)
    rp.fit_val(run)
    rp.score(run)
    rp.influence(run)
    rp.evaluate(run, "theta")
    rp.downstream(run, "full", 0)
    stages = [c[0] for c in run.commands]
    assert stages == ["warmup", "fit-val", "score", "influence", "evaluate", "train", "evaluate"]
    for cmd in run.commands:
        assert "--beta" in cmd, cmd
        assert cmd[cmd.index("--beta") + 1] == "0.37", cmd
