"""`prefsift influence` end to end on tiny models: stored IF/TIF/diagnostics, resume, caching, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prefsift.cli import main
from prefsift.storage import connect, engine, runs


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (tests/conftest.py::one_thread)."""


def run_cli(capsys, *argv) -> tuple[int, dict | str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out)
    except ValueError:
        return code, err


def influence(capsys, db, policy, ref, *extra):
    return run_cli(
        capsys, "influence", "--db", str(db), "--dataset", "tiny", "--policy", str(policy), "--ref", str(ref),
        "--batch-tokens", "48", "--json", *extra,
    )  # fmt: skip


def test_influence_stores_if_tif_and_diagnostics(tiny_db, tiny_model_dir, tiny_model_dir_b, capsys):
    from prefsift.scoring import influence as I
    from prefsift.scoring.logprobs import collate, sequence_logps
    from prefsift.scoring.models import ModelSpec, load_model, load_tokenizer
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs
    from prefsift.storage import pairs
    from tests.influence_reference import pair_gradient_influence

    code, out = influence(capsys, tiny_db, tiny_model_dir_b, tiny_model_dir)
    assert code == 0, out
    assert out["method"] == "jvp" and out["n_pairs"] == 6 and not out["gval_cached"]
    with connect(tiny_db, read_only=True) as con:
        scores = engine.get_scores(con, "tiny").set_index("pair_id")
        diag = runs.get_diagnostics(con, out["run_id"]).set_index("name")["value"]
        train = pairs.get_pairs(con, "tiny", split="train").to_pylist()
        val = pairs.get_pairs(con, "tiny", split="val").to_pylist()
        config = json.loads(
            runs.list_score_runs(con, "tiny").set_index("run_id").loc[out["run_id"], "config"]
        )
    assert config["method_used"] == "jvp" and config["beta"] == 0.1
    assert set(scores.columns) >= {"if", "tif"} and len(scores) == 6
    assert set(scores["tif"]) <= {0.0, 1.0} and scores["tif"].sum() == out["n_tif"] == 4  # 10-90 of 6 values
    assert diag["n_pairs"] == 6 and "pearson_irm" in diag.index and "overlap_irm" in diag.index
    # each overlap beside a same-size random selection's: max(kept, TIF) / n
    assert diag["chance_irm"] == pytest.approx(max(diag["n_kept_irm"], diag["n_tif"]) / diag["n_pairs"])
    assert diag["null_lo_irm"] <= diag["chance_irm"] <= diag["null_hi_irm"]

    # Independent recomputation: float64 models, per-pair autograd gradients of the DPO loss.
    tok = load_tokenizer(ModelSpec(str(tiny_model_dir_b)))
    pol = load_model(ModelSpec(str(tiny_model_dir_b), dtype="float64", attn_implementation="eager"))
    ref = load_model(ModelSpec(str(tiny_model_dir), dtype="float64", attn_implementation="eager"))
    cfg = TokenizeConfig()

    def batch(rows):
        t = tokenize_pairs(tok, rows, cfg)
        return collate([x.chosen_seq() for x in t] + [x.rejected_seq() for x in t], tok.pad_token_id)

    bt, bv = batch(train), batch(val)
    with torch.no_grad():
        rc, rr = I.split_pairs(sequence_logps(ref, bt))
        vc, vr = I.split_pairs(sequence_logps(ref, bv))
    params = I.select_params(pol)
    fn = I.make_logp_fn(pol)
    g, _ = I.validation_gradient(fn, params, [(bv, vc, vr)], len(val), 0.1)
    expect = pair_gradient_influence(fn, params, g, bt, rc, rr, 0.1).numpy()
    got = scores.loc[[r["pair_id"] for r in train], "if"].to_numpy()
    assert np.abs(expect).min() > 0
    assert np.linalg.norm(got - expect) / np.linalg.norm(expect) < 1e-4  # float32 run vs float64 reference


def test_resume_after_a_kill_and_cached_gval(tiny_db, tiny_model_dir, tiny_model_dir_b, capsys, monkeypatch):
    import prefsift.scoring.influence as I
    from prefsift.storage.paths import runs_dir

    real = I.stream_directional

    def dies_after_one_batch(*args, **kwargs):
        gen = real(*args, **kwargs)
        yield next(gen)
        raise KeyboardInterrupt  # what a kill looks like from inside: the run stops mid-way

    monkeypatch.setattr(I, "stream_directional", dies_after_one_batch)
    code, _ = influence(capsys, tiny_db, tiny_model_dir_b, tiny_model_dir)
    assert code == 130
    shards = list(runs_dir(tiny_db).glob("if-*/shard-*.parquet"))
    assert len(shards) == 1
    with connect(tiny_db, read_only=True) as con:
        assert "if" not in runs.latest_score_runs(con, "tiny")  # nothing committed by the killed run
    monkeypatch.setattr(I, "stream_directional", real)
    code, out = influence(capsys, tiny_db, tiny_model_dir_b, tiny_model_dir)
    assert code == 0, out
    assert out["gval_cached"] and 0 < out["n_resumed_seqs"] < 12
    with connect(tiny_db, read_only=True) as con:
        resumed = engine.get_scores(con, "tiny")["if"].to_numpy()
    # The same run from scratch (other method key -> its own folder) gives the same numbers.
    code, fresh = influence(capsys, tiny_db, tiny_model_dir_b, tiny_model_dir, "--method", "grad")
    assert code == 0 and fresh["method"] == "grad" and fresh["n_resumed_seqs"] == 0
    with connect(tiny_db, read_only=True) as con:
        by_grad = engine.get_scores(con, "tiny", {"if": fresh["run_id"]})["if"].to_numpy()
    np.testing.assert_allclose(resumed, by_grad, rtol=1e-4, atol=1e-7)


def test_user_errors(tiny_db, tiny_model_dir, capsys):
    from prefsift.joblock import job_lock

    code, err = influence(capsys, tiny_db, tiny_model_dir, tiny_model_dir, "--val-split", "eval")
    assert code == 2 and "no 'eval' pairs" in err
    code, err = influence(capsys, tiny_db, tiny_model_dir, tiny_model_dir, "--band", "90", "10")
    assert code == 2 and "band" in err
    code, err = influence(capsys, tiny_db, tiny_model_dir, tiny_model_dir, "--params", "nothing-matches")
    assert code == 2 and "no parameters" in err
    with job_lock(tiny_db, "another job"):
        code, err = influence(capsys, tiny_db, tiny_model_dir, tiny_model_dir)
    assert code == 2 and "another prefsift job" in err


def test_preconditioned_query_vector(tiny_db, tiny_model_dir, tiny_model_dir_b, capsys):
    """--precondition cg: its own cached query vector and run, recorded in the run config."""
    base = ("--params", r"layers\.1\.input_layernorm")
    code, plain = influence(capsys, tiny_db, tiny_model_dir_b, tiny_model_dir, *base)
    assert code == 0, plain
    code, pre = influence(
        capsys, tiny_db, tiny_model_dir_b, tiny_model_dir, *base,
        "--precondition", "cg", "--damping", "1.0", "--cg-iters", "3",
    )  # fmt: skip
    assert code == 0, pre
    assert pre["gval_id"] != plain["gval_id"] and pre["run_id"] != plain["run_id"]
    with connect(tiny_db, read_only=True) as con:
        cfg = json.loads(runs.list_score_runs(con, "tiny").set_index("run_id").loc[pre["run_id"], "config"])
        a = engine.get_scores(con, "tiny", {"if": plain["run_id"]})["if"].to_numpy()
        b = engine.get_scores(con, "tiny", {"if": pre["run_id"]})["if"].to_numpy()
    assert cfg["precondition"] == {"method": "cg", "damping": 1.0, "cg_iters": 3}
    assert not np.allclose(a, b)


def test_grad_batch_tokens_is_validated_with_a_memory_safe_default():
    """g_val's backward batches are a memory knob: validated, default 512 padded tokens (6.0 GiB peak at 1024 on AlpacaEval, 3.6 at 512)."""
    import pytest

    from prefsift.influence import InfluenceConfig

    with pytest.raises(ValueError, match="grad_batch_tokens"):
        InfluenceConfig(dataset="d", policy="p", ref="r", grad_batch_tokens=0)
    assert InfluenceConfig(dataset="d", policy="p", ref="r").grad_batch_tokens == 512


def test_influence_and_default_scores_match_the_policy_and_beta(
    tiny_db, tiny_model_dir, tiny_model_dir_b, capsys
):
    """IF of θ_B is compared with LossDiff of θ_B, not with a newer LossDiff of another policy;
    get_scores' default reads one policy's runs (bug 15b)."""
    from prefsift.score import score_dataset
    from prefsift.scoring.models import ModelSpec

    a, b = ModelSpec(str(tiny_model_dir), device="cpu"), ModelSpec(str(tiny_model_dir_b), device="cpu")
    of_b = score_dataset(tiny_db, "tiny", ref=a, policy=b, val=a)
    of_a = score_dataset(tiny_db, "tiny", ref=a, policy=a, val=b)  # newer, another policy
    code, out = influence(capsys, tiny_db, tiny_model_dir_b, tiny_model_dir)
    assert code == 0, out
    with connect(tiny_db, read_only=True) as con:
        assert runs.get_score_run_config(con, out["run_id"])["lossdiff_run"] == of_b["lossdiff"]
        assert out["lossdiff_run"] == of_b["lossdiff"] != of_a["lossdiff"]
        default = runs.latest_score_runs(con, "tiny")  # the newest run (IF of θ_B) sets the policy
        assert default["lossdiff"] == of_b["lossdiff"] and default["if"] == out["run_id"]
        assert engine.get_scores(con, "tiny").equals(engine.get_scores(con, "tiny", default))
    # a newer scoring of θ_B at another beta: IF (beta 0.1) is no longer mixed into the default
    other_beta = score_dataset(tiny_db, "tiny", ref=a, policy=b, val=a, beta=0.5)
    with connect(tiny_db, read_only=True) as con:
        default = runs.latest_score_runs(con, "tiny")
    assert default == {m: other_beta[m] for m in other_beta}
