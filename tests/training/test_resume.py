"""A killed training resumes from its last checkpoint and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from prefsift.config import build_config
from prefsift.models import register_reference
from prefsift.storage import connect
from prefsift.storage import training as tstore
from prefsift.train import train

# 8 pairs, batch 2: 4 steps, a checkpoint after each
SETTINGS = {
    "per_device_train_batch_size": 2,
    "max_length": 64,
    "save_steps": 1,
    "save_total_limit": 3,
    "learning_rate": 5e-3,
}


class SimulatedKill(RuntimeError):
    pass


class StopAfterSteps(TrainerCallback):
    """Raise after `steps` optimizer steps (after the checkpoint of that step is written): the
    exception escapes `train()` the way a SIGKILL would end it, leaving only what was saved on disk."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            raise SimulatedKill(f"simulated kill after step {state.global_step}")


def _params(out) -> dict:
    return load_file(str(Path(out) / "adapter_model.safetensors"))


def test_killed_run_resumes_to_identical_result(split_db, tiny_model_dir, tmp_path):
    db = split_db
    ref = register_reference(db, str(tiny_model_dir))
    cfg = build_config("warmup", overrides=SETTINGS)

    full = train(db, cfg, ref, "full", dataset="tiny", out_dir=tmp_path / "full")
    with connect(db, read_only=True) as con:
        full_metrics = tstore.get_metrics(con, full["run_id"])
    assert full["steps"] == 4

    out = tmp_path / "killed"
    with pytest.raises(SimulatedKill):
        train(db, cfg, ref, "killed", dataset="tiny", out_dir=out, callbacks=[StopAfterSteps(2)])
    with connect(db, read_only=True) as con:
        killed = tstore.list_runs(con, "tiny")
    assert sorted(killed["status"]) == ["done", "failed"]  # another output folder: another run
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    resumed = train(db, cfg, ref, "killed", dataset="tiny", out_dir=out)  # the same command again
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    assert resumed["loss"] == pytest.approx(full["loss"], abs=1e-6)
    a, b = _params(full["output_dir"]), _params(out)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    assert max(float(a[k].abs().max()) for k in a if "lora_B" in k) > 0
    with connect(db, read_only=True) as con:
        metrics = tstore.get_metrics(con, resumed["run_id"])
        assert tstore.get_run(con, resumed["run_id"])["status"] == "done"
    cols = ["step", "loss", "rewards/margins", "learning_rate"]
    steps = metrics[metrics["loss"].notna()][cols].reset_index(drop=True)
    ref_steps = full_metrics[full_metrics["loss"].notna()][cols].reset_index(drop=True)
    assert list(steps["step"]) == [1, 2, 3, 4]
    assert torch.allclose(torch.tensor(steps.values), torch.tensor(ref_steps.values), atol=1e-6, rtol=0)
