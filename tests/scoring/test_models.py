"""Model fingerprints: content ids that do not depend on how a process happened to save them."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from prefsift.scoring.models import ModelSpec, fingerprint, hash_folder


def _adapter(folder, modules: list[str], weight: float = 1.0) -> None:
    folder.mkdir(parents=True)
    cfg = {"r": 4, "target_modules": modules, "peft_type": "LORA", "base_model_name_or_path": "base"}
    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    save_file({"w": torch.full((2, 2), weight)}, str(folder / "adapter_model.safetensors"))


def test_adapter_fingerprint_ignores_set_order_in_config(tmp_path) -> None:
    # PEFT writes target_modules from a Python set: its order changes between processes, and a
    # resumed training once registered the same weights twice under two ids because of it.
    _adapter(tmp_path / "a", ["q_proj", "k_proj", "v_proj"])
    _adapter(tmp_path / "b", ["v_proj", "q_proj", "k_proj"])
    assert hash_folder(tmp_path / "a") == hash_folder(tmp_path / "b")


def test_adapter_fingerprint_changes_with_weights_and_modules(tmp_path) -> None:
    _adapter(tmp_path / "a", ["q_proj", "k_proj"])
    _adapter(tmp_path / "b", ["q_proj", "k_proj"], weight=2.0)
    _adapter(tmp_path / "c", ["q_proj", "o_proj"])
    ids = {hash_folder(tmp_path / x) for x in "abc"}
    assert len(ids) == 3


def test_fingerprint_skips_trainer_state_and_checkpoints(tmp_path) -> None:
    _adapter(tmp_path / "a", ["q_proj"])
    base = ModelSpec(path=str(tmp_path / "base-does-not-exist"), adapter=str(tmp_path / "a"))
    before = fingerprint(base)
    (tmp_path / "a" / "training_args.bin").write_bytes(b"\x00pickle")
    (tmp_path / "a" / "checkpoint-2").mkdir()
    save_file({"w": torch.zeros(1)}, str(tmp_path / "a" / "checkpoint-2" / "adapter_model.safetensors"))
    assert fingerprint(base) == before
