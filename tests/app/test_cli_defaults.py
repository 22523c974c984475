"""One place for each default (#16): every CLI option that has a default reads it from the config
dataclass (or constant) that owns it, through `prefsift.config.option`, so the CLI and the Python
API cannot drift apart. The few options that are the command line's own are listed with why."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from prefsift import config
from prefsift.cli import build_parser
from prefsift.demo import DemoConfig
from prefsift.evidence import EvidenceConfig
from prefsift.experiment import ExperimentConfig

# (command, option): the command line's own, with no Python API behind it.
CLI_ONLY = {
    ("ingest", "--split"): "the role of the ingested pairs; the pipeline's first split",
    ("ingest", "--hub-split"): "which split of a hub dataset to read (datasets' own name)",
    ("split", "--seed"): "make_splits' seed argument, given on every call",
    ("select", "--split"): "the split a rule applies to",
    ("select", "--run"): "an empty list to append METRIC=RUN_ID to",
    ("warmup", "--name"): "the model's registered name",
    ("fit-val", "--name"): "the model's registered name",
    ("train", "--name"): "the model's registered name",
    ("train", "--from"): "the registered model training starts from (the warm-up's name)",
}
# add_training_arguments (warmup, fit-val, train, experiment): how the job runs, not what it trains.
TRAINING_CLI_ONLY = {"--device", "--resume"}
OWNERS = {
    c.__name__: c
    for c in (
        config.ScoreConfig,
        config.EvaluateConfig,
        config.InfluenceConfig,
        config.CalibrationConfig,
        config.ServeConfig,
        DemoConfig,
        EvidenceConfig,
        ExperimentConfig,
    )
}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _with_defaults(p: argparse.ArgumentParser):
    for a in p._actions:
        if not a.option_strings or a.default in (None, False, argparse.SUPPRESS):
            continue
        if isinstance(a, argparse._HelpAction | argparse._VersionAction | argparse._CountAction):
            continue
        yield a


def test_every_default_has_one_owner():
    strays = []
    for name, p in _subcommands().items():
        for a in _with_defaults(p):
            flag = a.option_strings[-1]
            if (name, flag) in CLI_ONLY or (
                flag in TRAINING_CLI_ONLY and "--lora-set" in p._option_string_actions
            ):
                continue
            if not hasattr(a, "owner"):
                strays.append(f"prefsift {name} {flag} (default {a.default!r})")
    assert not strays, "defaults written in argparse instead of read from their owner: " + "; ".join(strays)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_option_defaults_equal_their_owners_fields(command):
    p = _subcommands()[command]
    for a in _with_defaults(p):
        owner = getattr(a, "owner", "")
        cls, _, field = owner.partition(".")
        if cls not in OWNERS or "-" in field:  # a LO-HI pair of fields: test_the_shared_defaults_agree
            continue
        f = next(x for x in dataclasses.fields(OWNERS[cls]) if x.name == field)
        want = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert a.default == (list(want) if isinstance(want, tuple) else want), (command, a.option_strings)
        assert "(default " in a.help, (command, a.option_strings)


def test_the_shared_defaults_agree():
    """The tokenization of `score`, `influence`, `evaluate` and the TIF band of `calibrate` are the
    same values, declared once."""
    from prefsift.scoring.tokenize import TokenizeConfig

    s, i, c = config.ScoreConfig, config.InfluenceConfig, config.CalibrationConfig
    assert (s.max_length, s.truncation_mode) == (TokenizeConfig.max_length, TokenizeConfig.truncation_mode)
    assert (i.max_length, i.truncation_mode, i.beta) == (s.max_length, s.truncation_mode, s.beta)
    assert (c.tif_lo, c.tif_hi) == i.band
    assert s.beta == config.DEFAULT_DPO["beta"]
    args = build_parser().parse_args(["score", "--dataset", "d"])
    assert (args.beta, args.max_length, args.batch_tokens) == (s.beta, s.max_length, s.batch_tokens)
    args = build_parser().parse_args(["diagnose", "--selection", "x"])
    assert tuple(float(v) for v in args.tif_band.split("-")) == (c.tif_lo, c.tif_hi)
