"""benchmarks/gpu/experiment.py drives the product's `prefsift experiment` on the selection it made,
at the run's beta, length, seeds and epochs, inside the time left of its budget."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "prefsift_bench_gpu_experiment", ROOT / "benchmarks" / "gpu" / "experiment.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class RecordingRun:
    """Stands in for reproduce.Run: records each prefsift command line and its timeout."""

    def __init__(self, args) -> None:
        self.args, self.commands = args, []

    def cli(self, *argv: str, timeout=None) -> dict:
        self.commands.append((list(argv), timeout))
        return {"n_kept": 3, "n_total": 4, "_text": "x", "wall_s": 0.0}


def test_experiment_stage_runs_prefsift_experiment_on_the_selection():
    xp = _module()
    args = argparse.Namespace(
        data="hh",
        max_length=256,
        batch_size=16,
        lr=2e-4,
        seed=0,
        bf16=True,
        beta=0.37,
        epochs=2.0,
        budget_s=1e6,
    )
    run = RecordingRun(args)
    assert xp.select(run) == {"n_kept": 3, "n_total": 4, "wall_s": 0.0}
    out = xp.experiment(run, [0, 1, 2])
    assert "_text" not in out
    (sel, _), (diag, _), (cmd, timeout) = run.commands
    assert sel[:2] == ["select", "--dataset"] and sel[sel.index("--rule") + 1] == xp.SELECTION[1]
    assert diag == ["diagnose", "--selection", "ldirm"]
    assert cmd[:3] == ["experiment", "--selection", "ldirm"]
    assert cmd[cmd.index("--seeds") + 1 : cmd.index("--seeds") + 4] == ["0", "1", "2"]
    for flag, value in (
        ("--epochs", "2.0"),
        ("--max-length", "256"),
        ("--beta", "0.37"),
        ("--batch-size", "16"),
    ):
        assert cmd[cmd.index(flag) + 1] == value, flag
    assert "bf16=true" in cmd
    assert 0 < timeout <= 1e6
