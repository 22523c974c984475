"""`prefsift score` / `logps` / `explain-pair`: caching, resume after a crash, CLI, storage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import prefsift.models as models_mod
import prefsift.score as score_mod
from prefsift.cli import main
from prefsift.errors import UserError
from prefsift.scoring import metrics
from prefsift.scoring.models import ModelSpec
from prefsift.storage import connect, engine, runs
from prefsift.storage.paths import runs_dir


def spec(path) -> ModelSpec:
    return ModelSpec(path=str(path), device="cpu")


def logps_frame(db, run_id):
    with connect(db, read_only=True) as con:
        return runs.get_logps(con, run_id).to_pandas().set_index("pair_id").sort_index()


def test_score_stores_irm_lossdiff_and_reruns_compute_nothing(
    tiny_db, tiny_model_dir, tiny_model_dir_b, monkeypatch
):
    ref, pol, val = spec(tiny_model_dir), spec(tiny_model_dir_b), spec(tiny_model_dir)
    out = score_mod.score_dataset(tiny_db, "tiny", ref, pol, val, beta=0.2)
    assert set(out) == {"irm", "policy_loss", "lossdiff", "val_loss"}
    with connect(tiny_db, read_only=True) as con:
        scores = engine.get_scores(con, "tiny", out).set_index("pair_id").sort_index()
        lp = runs.list_logp_runs(con, "tiny")
        cfg = json.loads(runs.list_score_runs(con, "tiny").set_index("metric").loc["irm", "config"])
    assert len(scores) == 6 and len(lp) == 2  # ref and val are the same weights: one cached run
    assert cfg["beta"] == 0.2 and cfg["logp_runs"]["ref"] == cfg["logp_runs"]["val"]
    # the scores are the documented functions of the stored log-probs
    r = logps_frame(tiny_db, cfg["logp_runs"]["ref"])
    p = logps_frame(tiny_db, cfg["logp_runs"]["policy"])
    m = metrics.margin(p.chosen_logp, p.rejected_logp, r.chosen_logp, r.rejected_logp, 0.2)
    np.testing.assert_allclose(scores["irm"], m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        scores["lossdiff"], metrics.dpo_loss(m) - metrics.dpo_loss(0.0 * m), atol=1e-12
    )

    # a rerun with the same inputs loads no model; another beta only adds score runs
    def boom(*a, **k):
        raise AssertionError("a model was loaded for a cached run")

    monkeypatch.setattr("prefsift.scoring.models.load_model", boom)
    assert score_mod.score_dataset(tiny_db, "tiny", ref, pol, val, beta=0.2) == out
    other = score_mod.score_dataset(tiny_db, "tiny", ref, pol, val, beta=0.5)
    assert other["irm"] != out["irm"]
    # another tokenization (or another dtype) is a new log-prob run
    from prefsift.scoring.tokenize import TokenizeConfig

    with pytest.raises(AssertionError, match="model was loaded"):
        score_mod.ensure_logps(tiny_db, pol, "tiny", tok_config=TokenizeConfig(max_length=8))
    with pytest.raises(AssertionError, match="model was loaded"):
        score_mod.ensure_logps(
            tiny_db, ModelSpec(str(tiny_model_dir_b), dtype="float64", device="cpu"), "tiny"
        )


def test_adapter_is_merged_for_scoring_with_the_same_numbers(tiny_db, tiny_model_dir, tmp_path, monkeypatch):
    """A LoRA policy is scored with its adapter merged into the weights (a plain forward), and
    its log-probs equal the unmerged PeftModel's in float64."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import prefsift.scoring.logprobs as lp_mod
    from prefsift.scoring.models import load_model, load_tokenizer
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

    torch.manual_seed(3)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora).save_pretrained(
        tmp_path / "lora"
    )
    s = ModelSpec(str(tiny_model_dir), adapter=str(tmp_path / "lora"), dtype="float64", device="cpu")
    seen = []
    real = lp_mod.pair_logps

    def spy(model, *a, **k):
        seen.append(model)
        return real(model, *a, **k)

    monkeypatch.setattr(lp_mod, "pair_logps", spy)
    run = score_mod.ensure_logps(tiny_db, s, "tiny")
    assert seen and all(not any("lora_" in n for n, _ in m.named_parameters()) for m in seen)
    got = logps_frame(tiny_db, run)
    # the reference: the unmerged PeftModel, one padded row per sequence
    unmerged = load_model(s)
    assert any("lora_" in n for n, _ in unmerged.named_parameters())
    rows, _ = score_mod._read_pairs(tiny_db, "tiny", "train")
    tp = tokenize_pairs(load_tokenizer(s), rows, TokenizeConfig())
    want = real(unmerged, tp, load_tokenizer(s).pad_token_id, layout="padded")
    ids = [r["pair_id"] for r in rows]
    base = real(load_model(ModelSpec(str(tiny_model_dir), dtype="float64", device="cpu")), tp, 0)
    assert np.abs(want["chosen_logp"] - base["chosen_logp"]).max() > 1e-3  # the adapter changes the numbers
    np.testing.assert_allclose(got.loc[ids, "chosen_logp"], want["chosen_logp"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.loc[ids, "rejected_logp"], want["rejected_logp"], rtol=0, atol=1e-9)


def test_crash_then_resume_equals_uninterrupted_run(tiny_db, tiny_model_dir, tmp_path, monkeypatch):
    clean_db = tmp_path / "clean.duckdb"
    shutil.copy(tiny_db, clean_db)
    monkeypatch.setattr(score_mod, "SHARD_PAIRS", 2)
    import prefsift.scoring.logprobs as lp_mod

    real = lp_mod.pair_logps
    calls = {"n": 0}

    def crash_after_two(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("simulated kill -9")
        return real(*a, **k)

    monkeypatch.setattr(lp_mod, "pair_logps", crash_after_two)
    with pytest.raises(RuntimeError, match="simulated"):
        score_mod.ensure_logps(tiny_db, spec(tiny_model_dir), "tiny")
    shards = list(runs_dir(tiny_db).glob("*/shard-*.parquet"))
    assert len(shards) == 2  # the finished chunks were kept, nothing was committed
    with connect(tiny_db, read_only=True) as con:
        assert len(runs.list_logp_runs(con, "tiny")) == 0
    # a stale duplicate shard (e.g. a rank that finished the same chunk) must not double-count
    shutil.copy(shards[0], shards[0].with_name("shard-r009-duplicate.parquet"))
    monkeypatch.setattr(lp_mod, "pair_logps", real)
    calls["n"] = 0

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(lp_mod, "pair_logps", counting)
    resumed = score_mod.ensure_logps(tiny_db, spec(tiny_model_dir), "tiny")
    assert calls["n"] == 1  # only the 2 missing pairs
    clean = score_mod.ensure_logps(clean_db, spec(tiny_model_dir), "tiny")
    assert resumed == clean
    a, b = logps_frame(tiny_db, resumed), logps_frame(clean_db, clean)
    assert len(a) == 6 and list(a.index) == list(b.index)
    np.testing.assert_allclose(a.chosen_logp, b.chosen_logp, atol=1e-5)
    np.testing.assert_allclose(a.rejected_logp, b.rejected_logp, atol=1e-5)


def test_cli_score_logps_info_explain(tiny_db, tiny_model_dir, tiny_model_dir_b, capsys, monkeypatch):
    db = str(tiny_db)
    assert (
        main(
            [
                "score",
                "--db",
                db,
                "--dataset",
                "tiny",
                "--ref",
                str(tiny_model_dir),
                "--policy",
                str(tiny_model_dir_b),
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out["score_runs"]) == {"irm", "policy_loss"} and out["summary"]["irm"]["n"] == 6
    assert (
        main(
            [
                "logps",
                "--db",
                db,
                "--dataset",
                "tiny",
                "--model",
                str(tiny_model_dir),
                "--split",
                "val",
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    lp = json.loads(capsys.readouterr().out)
    assert lp["n_pairs"] == 2
    assert main(["info", "--db", db, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["logp_runs"]) == 3 and len(info["score_runs"]) == 2
    assert {m["role"] for m in info["models"]} >= {"reference", "policy"}
    # explain-pair: per-token rows whose sums equal the cached sequence log-probs
    with connect(tiny_db, read_only=True) as con:
        pair_id = con.execute("SELECT pair_id FROM pairs WHERE split = 'train' LIMIT 1").fetchone()[0]
    import prefsift.scoring.logprobs as lp_mod

    packed_calls = []
    real_pack = lp_mod.pack_batches

    def spy(tokenized, *a, **k):  # explain-pair runs the scoring pass's packed layout
        packed_calls.append(len(tokenized))
        return real_pack(tokenized, *a, **k)

    monkeypatch.setattr(lp_mod, "pack_batches", spy)
    assert (
        main(
            [
                "explain-pair",
                "--db",
                db,
                "--dataset",
                "tiny",
                "--pair",
                pair_id,
                "--policy",
                str(tiny_model_dir_b),
                "--ref",
                str(tiny_model_dir),
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    ex = json.loads(capsys.readouterr().out)
    assert packed_calls == [1, 1] and ex["layout"] == {"policy": "packed", "ref": "packed"}
    # keyed like the policy's log-prob run on that split, so the dashboard can join the model name
    assert ex["run_id"] in {r["run_id"] for r in info["logp_runs"]}
    cached = logps_frame(tiny_db, ex["run_id"]).loc[pair_id]
    assert ex["sides"]["chosen"]["logp"] == pytest.approx(cached["chosen_logp"], abs=1e-5)
    assert ex["sides"]["rejected"]["logp"] == pytest.approx(cached["rejected_logp"], abs=1e-5)
    from prefsift.storage.tokens import token_logps

    with connect(tiny_db, read_only=True) as con:
        rows = token_logps(con, pair_id).set_index("side")
        irm = (
            engine.get_scores(con, "tiny", {"irm": out["score_runs"]["irm"]})
            .set_index("pair_id")
            .loc[pair_id, "irm"]
        )
    assert len(rows) == 2 and len(rows.loc["chosen", "tokens"]) == len(rows.loc["chosen", "logps"])
    assert ex["margin"] == pytest.approx(irm, abs=1e-5)
    # a user mistake is one line and exit code 2
    assert (
        main(
            [
                "score",
                "--db",
                db,
                "--dataset",
                "nope",
                "--ref",
                str(tiny_model_dir),
                "--policy",
                str(tiny_model_dir),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert main(["logps", "--db", db, "--dataset", "tiny", "--model", "not-a-model"]) == 2
    assert "error" in capsys.readouterr().err


def test_job_lock_refuses_a_second_job(tiny_db, tiny_model_dir):
    from prefsift.joblock import job_lock

    with job_lock(tiny_db, "another job"):
        assert (
            main(
                [
                    "score",
                    "--db",
                    str(tiny_db),
                    "--dataset",
                    "tiny",
                    "--ref",
                    str(tiny_model_dir),
                    "--policy",
                    str(tiny_model_dir),
                    "--device",
                    "cpu",
                ]
            )
            == 2
        )


def test_resolve_model_by_registered_name(tiny_db, tiny_model_dir):
    from prefsift.storage import runs as sruns

    with connect(tiny_db) as con:
        sruns.register_model(con, "abc123", str(tiny_model_dir), name="theta", adapter_path="/some/adapter")
    s = models_mod.resolve_model(tiny_db, "theta", dtype="bfloat16", device="cpu")
    assert s.path == str(tiny_model_dir) and s.adapter == "/some/adapter" and s.dtype == "bfloat16"
    assert models_mod.resolve_model(tiny_db, "org/model").path == "org/model"
    # one resolver: training accepts the same hub id, and a typo is refused the same way
    assert models_mod.resolve(tiny_db, "org/model").path == "org/model"
    with pytest.raises(UserError, match="nor a hub id"):
        models_mod.resolve(tiny_db, "no-such-model")


@pytest.mark.slow
def test_smollm2_scores_a_few_pairs(tmp_path):
    """The real embedded model: a few HH-style pairs, the packed fast path equals a plain full forward."""
    import torch

    from prefsift.embedded import smollm2_path
    from prefsift.scoring.logprobs import pair_logps
    from prefsift.scoring.models import load_model, load_tokenizer
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

    try:
        path = smollm2_path()
    except Exception as exc:  # noqa: BLE001 - the package is optional
        pytest.skip(f"SmolLM2 not available: {exc}")
    s = ModelSpec(str(path), dtype="float32", device="cpu")
    tok, model = load_tokenizer(s), load_model(s)
    pairs = [
        {
            "prompt": "\n\nHuman: How do I boil an egg?\n\nAssistant:",
            "chosen": " Put it in boiling water for 8 minutes.",
            "rejected": " I don't know.",
        },
        {
            "prompt": [{"role": "user", "content": "What is the capital of France?"}],
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "Rome."}],
        },
    ]
    tp = tokenize_pairs(tok, pairs[:1], TokenizeConfig(max_length=64)) + tokenize_pairs(
        tok, pairs[1:], TokenizeConfig()
    )
    out = pair_logps(model, tp, tok.pad_token_id, layout="packed")
    for i, t in enumerate(tp):
        for side, key in ((t.chosen_seq(), "chosen_logp"), (t.rejected_seq(), "rejected_logp")):
            ids = torch.tensor([side[0] + side[1]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            want = logp.gather(1, ids[0, 1:, None])[len(side[0]) - 1 :].sum().item()
            assert out[key][i] == pytest.approx(want, abs=1e-3)
    assert out["chosen_logp"][1] > out["rejected_logp"][1]  # the instruct model prefers Paris


def test_score_says_when_prompts_merge_with_answers(tmp_path, tiny_model_dir, caplog):
    """Before any training: scoring tokenizes as TRL does and names the pairs that would trip
    TRL's "tokenized prompt is not a prefix" warning, in prefsift's words, with the fix."""
    import logging

    from prefsift.ingest import ingest
    from tests.conftest import TINY_PAIRS, write_jsonl

    db = tmp_path / "s.duckdb"
    rows = [{**p, "prompt": p["prompt"] + " : "} for p in TINY_PAIRS[:4]] + TINY_PAIRS[4:]
    ingest(write_jsonl(tmp_path / "s.jsonl", rows), "s", db=db)
    caplog.set_level(logging.WARNING)
    score_mod.ensure_logps(db, spec(tiny_model_dir), "s", split="train")
    (note,) = [r.getMessage() for r in caplog.records if r.name == "prefsift.score"]
    assert note.startswith("4 of 8 pairs: the prompt's last tokens merge with the answer")
    assert "--chat" in note and "is not a prefix" in note
    caplog.clear()  # conversational pairs of the same text: nothing to say
    ingest(write_jsonl(tmp_path / "c.jsonl", rows), "c", db=db, chat=True)
    score_mod.ensure_logps(db, spec(tiny_model_dir), "c", split="train")
    assert [r for r in caplog.records if r.name == "prefsift.score"] == []


def test_info_says_which_dtype_each_run_used(tiny_db, tiny_model_dir, tiny_model_dir_b, capsys):
    from dataclasses import replace

    from prefsift.storage import training as tstore

    ref = replace(spec(tiny_model_dir), dtype="float64")
    score_mod.score_dataset(tiny_db, "tiny", ref, replace(spec(tiny_model_dir_b), dtype="float64"))
    score_mod.ensure_logps(tiny_db, spec(tiny_model_dir), "tiny")  # float32
    with connect(tiny_db) as con:
        tstore.start_run(con, "tr-1", "warmup", "tiny", None, None, "out", {"dtype": "bfloat16"})
    assert main(["info", "--db", str(tiny_db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(r["dtype"] for r in info["logp_runs"]) == ["float32", "float64", "float64"]
    assert {r["metric"]: r["dtype"] for r in info["score_runs"]} == {
        "irm": "float64",
        "policy_loss": "float64",
    }
    assert [r["dtype"] for r in info["training_runs"]] == ["bfloat16"]
    assert main(["info", "--db", str(tiny_db)]) == 0
    assert "dtype" in capsys.readouterr().out
