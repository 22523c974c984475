"""Full fine-tuning (--full): the whole model is saved and registered as the path, no adapter."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from prefsift.config import build_config
from prefsift.models import register_reference
from prefsift.storage import connect
from prefsift.storage import runs as rstore
from prefsift.train import train


def test_full_finetune_warmup(split_db, tiny_model_dir):
    ref = register_reference(split_db, str(tiny_model_dir))
    cfg = build_config(
        "warmup", full=True, overrides={"max_steps": 1, "max_length": 64, "learning_rate": 1e-3}
    )
    out = train(split_db, cfg, ref, "theta_full", dataset="tiny")
    assert out["adapter"] is None and out["path"] == out["output_dir"] and out["steps"] == 1
    new = load_file(str(Path(out["output_dir"]) / "model.safetensors"))
    old = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    changed = [k for k in old if not torch.equal(old[k], new[k])]
    assert len(changed) > len(old) // 2  # every layer moved, not an adapter
    with connect(split_db, read_only=True) as con:
        m = rstore.get_model(con, "theta_full")
    assert m["adapter_path"] is None and m["lineage"]["reference_path"] == str(tiny_model_dir)
