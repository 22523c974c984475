"""Training memory (prefsift/memory.py): micro-batches sized from a token budget keep the
effective batch and the number of optimizer steps; a stage that cannot fit is refused before it
starts, with an estimate and the flag that fixes it."""

from __future__ import annotations

import math

import pytest

from prefsift import memory
from prefsift.cli import main as cli_main
from prefsift.config import build_config
from prefsift.errors import UserError
from prefsift.models import register_reference
from prefsift.storage import connect
from prefsift.storage import training as tstore
from prefsift.train import train
from tests.training.conftest import FAST

# SmolLM2-135M's shape, for the arithmetic (nothing is loaded)
SMOL = memory.Shape(n_params=134_515_008, layers=30, hidden=576, intermediate=1536, vocab=49152)


@pytest.mark.parametrize(
    ("batch", "per_pair", "budget", "micro"),
    [(8, 128, 1024, 8), (8, 512, 1024, 2), (8, 400, 1024, 2), (6, 400, 1024, 2), (8, 2000, 1024, 1)],
)
def test_micro_batch_is_the_largest_divisor_that_fits(batch, per_pair, budget, micro):
    assert memory.micro_batch(batch, per_pair, budget) == micro


def _plan(**kw):
    args = dict(batch=8, longest_row=300, max_length=256, budget=1024, dtype="float32", lora=True,
                ref_copy=False, checkpointing=None, available=16.0, what="warmup theta")  # fmt: skip
    return memory.plan_training(SMOL, **{**args, **kw})


def test_plan_keeps_the_effective_batch_and_checkpoints_only_where_it_pays():
    p = _plan()  # rows capped at max_length 256: 512 tokens a pair, 2 pairs a micro-batch
    assert (p.micro_batch, p.accumulation, p.checkpointing, p.tokens_per_pair) == (2, 4, False, 512)
    assert 1.0 < p.estimate_gib < 4.0
    one = _plan(max_length=None, longest_row=1000)  # one pair is over the budget: checkpointing
    assert (one.micro_batch, one.accumulation, one.checkpointing) == (1, 8, True)
    assert one.estimate_gib < _plan(max_length=None, longest_row=1000, checkpointing=False).estimate_gib
    # the batch as it was before (8 pairs of 256 in one forward) needs several times more
    assert _plan(budget=8 * 512).estimate_gib > 2.5 * p.estimate_gib


def test_a_stage_that_cannot_fit_is_refused_with_the_flag_that_fixes_it():
    with pytest.raises(UserError, match=r"warmup theta will not fit in memory: about \d+\.\d GiB") as e:
        _plan(budget=8 * 512, available=3.0)
    assert "--batch-tokens" in str(e.value) and "3.0 GiB available" in str(e.value)
    with pytest.raises(UserError, match=r"Use --max-length \d+") as e:
        _plan(max_length=None, longest_row=4000, available=1.5)
    n = int(str(e.value).rsplit("--max-length ", 1)[1])
    assert _plan(max_length=n, longest_row=4000, available=1.5).micro_batch == 1  # the fix fits
    with pytest.raises(UserError, match="--dtype bfloat16"):
        _plan(available=0.3)


def _warmup(db, model, name, batch_tokens):
    cfg = build_config(
        "warmup",
        overrides={**FAST, "save_steps": 50},
        batch_tokens=batch_tokens,
        lora_overrides={"lora_dropout": 0.0},
    )
    return train(db, cfg, register_reference(db, str(model)), name, dataset="tiny", device="cpu")


@pytest.mark.e2e
def test_micro_batches_keep_the_effective_batch_and_the_optimizer_steps(split_db, tiny_model_dir):
    """8 train pairs, batch 4: one forward of 4 pairs, or micro-batches of 1 with 4 accumulation
    steps; the same 2 optimizer steps over the same pairs, the same loss."""
    whole = _warmup(split_db, tiny_model_dir, "whole", batch_tokens=4096)
    small = _warmup(split_db, tiny_model_dir, "small", batch_tokens=64)
    assert (whole["micro_batch"], whole["gradient_accumulation_steps"]) == (4, 1)
    assert small["micro_batch"] < 4
    assert small["micro_batch"] * small["gradient_accumulation_steps"] == 4
    assert whole["steps"] == small["steps"] == 2
    assert math.isclose(whole["train_loss"], small["train_loss"], rel_tol=1e-3)


def test_cli_refuses_before_anything_is_recorded(split_db, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_gib", lambda device: 1e-4)
    code = cli_main(
        [
            "warmup",
            "--db",
            str(split_db),
            "--dataset",
            "tiny",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "will not fit in memory" in err[0] and "Use --" in err[0], err
    with connect(split_db, read_only=True) as con:
        assert len(tstore.list_runs(con)) == 0
