"""TrainConfig: forwarding to DPOConfig / LoraConfig, TOML + CLI overrides, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from prefsift.config import DEFAULT_LORA, TrainConfig, build_config, parse_sets
from prefsift.errors import UserError


def test_defaults_per_kind_and_mode():
    warm = TrainConfig(kind="warmup")
    assert warm.dpo_kwargs()["num_train_epochs"] == 1
    assert warm.dpo_kwargs()["learning_rate"] == 5e-5
    assert TrainConfig(kind="train").dpo_kwargs()["num_train_epochs"] == 2
    assert TrainConfig(kind="train", lora=False).dpo_kwargs()["learning_rate"] == 1e-6
    assert warm.lora_kwargs() == DEFAULT_LORA
    assert warm.beta == 0.1


def test_frozen():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"dpo": {"not_a_field": 1}}, "not_a_field"),
        ({"lora_config": {"rank": 8}}, "rank"),
        ({"dpo": {"output_dir": "x"}}, "output_dir"),
        ({"kind": "pretrain"}, "pretrain"),
        ({"dpo": {"beta": -1}}, "beta"),
        ({"lora": False, "lora_config": {"r": 4}}, "lora"),
    ],
)
def test_errors_name_the_key(kwargs, key):
    with pytest.raises(UserError, match=key):
        TrainConfig(**kwargs)


def test_toml_then_cli_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        'seed = 3\n[dpo]\nbeta = 0.2\nlearning_rate = 1e-4\nloss_type = ["sigmoid"]\n[lora]\nr = 4\n'
    )
    cfg = build_config(
        "warmup", f, overrides={"beta": 0.5, "max_length": None, **parse_sets(["warmup_steps=2"])}
    )
    d = cfg.dpo_kwargs()
    assert (d["beta"], d["learning_rate"], d["warmup_steps"], d["loss_type"]) == (0.5, 1e-4, 2, ["sigmoid"])
    assert d["max_length"] == 512  # None = not given: the default stays
    assert cfg.seed == 3 and cfg.lora_kwargs()["r"] == 4 and cfg.lora_kwargs()["lora_alpha"] == 32
    assert cfg.to_dict()["dpo"]["beta"] == 0.5


def test_toml_unknown_key_and_full(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("epochs = 3\n")
    with pytest.raises(UserError, match="epochs"):
        build_config("warmup", f)
    f.write_text("[dpo]\nbeta = 0.3\n")
    cfg = build_config("train", f, full=True)
    assert cfg.lora is False and cfg.to_dict()["lora_config"] is None


def test_parse_sets_types():
    got = parse_sets(["a=1", "b=0.5", "c=true", "d=none", "e=cosine", 'f=["x"]'])
    assert got == {"a": 1, "b": 0.5, "c": True, "d": None, "e": "cosine", "f": ["x"]}
    with pytest.raises(UserError, match="key=value"):
        parse_sets(["novalue"])


def test_every_forwarded_key_reaches_dpoconfig(tmp_path):
    from trl import DPOConfig

    cfg = build_config(
        "warmup", overrides={"beta": 0.3, "lr_scheduler_type": "cosine", "label_smoothing": 0.1}
    )
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **cfg.dpo_kwargs())
    assert (args.beta, args.lr_scheduler_type.value, args.label_smoothing) == (0.3, "cosine", 0.1)
    assert args.activation_checkpointing is False or args.gradient_checkpointing is False
