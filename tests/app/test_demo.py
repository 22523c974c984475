"""The demo's pipeline end to end (no server), reduced: the tiny model and 40 bundled pairs.

The real default (SmolLM2-135M-Instruct) runs the same stages; see README for its times.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from prefsift.demo import DemoConfig, bundled_dataset, run_demo
from prefsift.storage import connect, engine, pairs, runs, selections


def test_bundled_dataset_is_shipped():
    lines = bundled_dataset().read_text().splitlines()
    assert len(lines) == 320
    assert sum('"noise": true' in line for line in lines) == 64


@pytest.mark.e2e
def test_demo_pipeline_scores_every_pair_and_reruns_from_cache(tiny_model_dir, tmp_path, monkeypatch):
    db = tmp_path / "demo.duckdb"
    cfg = DemoConfig(db=str(db), model=str(tiny_model_dir), limit=40, max_length=64, batch_size=8)
    out = run_demo(cfg, echo=lambda *a: None)
    with connect(db, read_only=True) as con:
        train_ids = set(
            pairs.get_pairs(con, "demo", split="train", columns=("pair_id",)).column("pair_id").to_pylist()
        )
        scores = engine.get_scores(con, "demo")
        kept = selections.get_selection(con, "lossdiff-irm")
        names = set(selections.list_selections(con)["name"])
        # pairs whose prompt fills --max-length have no response token: left out of every score
        truncated = set(runs.fully_truncated_pairs(con, runs.list_logp_runs(con, "demo")["run_id"].tolist()))
    assert len(train_ids) > 0
    for metric in ("irm", "lossdiff", "if", "tif"):
        have = set(scores.loc[scores[metric].notna(), "pair_id"])
        assert train_ids - truncated == have & train_ids, f"{metric} missing for some training pairs"
    assert {"lossdiff-irm", "tif", "random-baseline"} <= names
    assert 0 < int(kept["n_kept"]) <= len(train_ids)
    assert set(out["peak_rss_gib_per_stage"]) == set(out["stage_seconds"])
    assert all(v > 0 for v in out["peak_rss_gib_per_stage"].values())
    # A second run recomputes nothing. Counting runs could not show it (run ids are content
    # keys: a recomputed run replaces its row under the same id), so: none of the functions that
    # compute (log-probs, g_val, IF's forward-mode pass, DPO training) is entered, every log-prob
    # run, model, training run and scoring-engine run keeps the row it had (same creation time),
    # and every score keeps its value. (IF/TIF, the selections and θ's evaluation are re-derived
    # from those cached inputs and re-saved: cheap, and left out of the creation-time check.)
    before, scores_before = _stored_rows(db), _scores(db)
    computed = _watch_computation(monkeypatch)
    again = run_demo(cfg, echo=lambda *a: None)
    assert computed == []
    assert _stored_rows(db) == before
    pd.testing.assert_frame_equal(_scores(db), scores_before)
    assert again["kept"] == out["kept"]


def _scores(db):
    with connect(db, read_only=True) as con:
        return engine.get_scores(con, "demo").sort_values("pair_id", ignore_index=True)


_STORED = {
    "logp_runs": "run_id, created_at",
    "score_runs": "run_id, created_at",  # filtered below: the scoring engine's runs
    "models": "model_id, created_at",
    "training_runs": "run_id, created_at, finished_at",
}


def _stored_rows(db) -> dict:
    with connect(db, read_only=True) as con:
        rows = {
            t: sorted(map(str, con.execute(f"SELECT {c} FROM {t}").fetchall())) for t, c in _STORED.items()
        }
        engine = con.execute(
            "SELECT run_id, created_at FROM score_runs WHERE metric NOT IN ('if', 'tif') ORDER BY run_id"
        ).fetchall()
    rows["score_runs"] = [str(r) for r in engine]
    assert rows["logp_runs"] and rows["score_runs"] and rows["training_runs"]  # something to compare
    return rows


def _watch_computation(monkeypatch) -> list[str]:
    """Record every entry into the functions that compute: log-probs, g_val, IF's directional
    derivatives, DPO training."""
    from transformers import Trainer

    import prefsift.score
    import prefsift.scoring.influence

    entered: list[str] = []
    for owner, name in (
        (prefsift.score, "_compute"),
        (prefsift.scoring.influence, "validation_gradient"),  # g_val (a cached one is loaded, not entered)
        (prefsift.scoring.influence, "directional_logps"),  # IF's forward-mode pass, per batch
        (Trainer, "train"),
    ):
        inner = getattr(owner, name)

        def watched(*a, _inner=inner, _name=name, **k):
            entered.append(_name)
            return _inner(*a, **k)

        monkeypatch.setattr(owner, name, watched)
    return entered


def test_demo_models_are_found_by_role_and_runs_labelled_by_their_policy(demo_db):
    """θ, θ_val and π_ref come from the lineage the demo wrote (names carry a settings hash), a
    θ_val scored as a second policy keeps its role, and IF/TIF are labelled with θ, not π_ref."""
    from prefsift.models import role_model
    from prefsift.storage import explore
    from prefsift.storage import runs as rstore

    with connect(demo_db, read_only=True) as con:
        roles = rstore.model_roles(con, "demo")
        labelled = explore.score_runs(con, "demo")
    assert roles["policy"]["name"].startswith("theta-")
    assert roles["validation"]["name"].startswith("theta_val-")
    assert roles["validation"]["lineage"]["parent"] == roles["policy"]["model_id"]
    assert roles["reference"]["model_id"] == roles["policy"]["lineage"]["reference"]
    assert roles["policy"]["lineage"]["dataset"] == "demo"  # scoring θ by name did not wipe its lineage
    assert role_model(demo_db, "demo", "policy") == roles["policy"]["model_id"]
    assert role_model(demo_db, "demo", "policy", "my-theta") == "my-theta"  # a typed name still wins
    by_metric = labelled.groupby("metric")["policy"].agg(set).to_dict()
    theta, theta_val = roles["policy"]["name"], roles["validation"]["name"]
    assert by_metric["if"] == {theta} and by_metric["tif"] == {theta}
    assert by_metric["irm"] == {theta, theta_val}  # the second model Compare models shows


def test_role_model_says_how_to_make_a_missing_role(tiny_db):
    from prefsift.errors import UserError
    from prefsift.models import role_model

    with pytest.raises(UserError, match="prefsift warmup --dataset tiny"):
        role_model(tiny_db, "tiny", "policy")
    assert role_model(tiny_db, "tiny", "validation", required=False) is None


@pytest.mark.e2e
def test_cli_train_on_a_selection_finds_theta_and_fills_the_ledger(demo_db, tmp_path):
    """`prefsift train --selection S` with no --policy: θ from the dataset's lineage (the demo names
    it theta-<hash>), and the trained model is evaluated on the held-out pairs."""
    from prefsift.cli import main as cli
    from tests.conftest import copy_demo_db

    db = copy_demo_db(demo_db, tmp_path / "copy")
    assert cli(["train", "--selection", "lossdiff-irm", "--db", str(db)]) == 0
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT m.role, e.n_pairs FROM evaluations e JOIN models m USING (model_id) "
            "WHERE m.name = 'trained-lossdiff-irm' AND e.split = 'eval'"
        ).fetchall()
    assert rows and rows[0][0] == "trained" and rows[0][1] > 0


@pytest.mark.e2e
@pytest.mark.parametrize("template", [True, False], ids=["chat-model", "base-model"])
def test_demo_warmup_log_is_free_of_the_prompt_prefix_warning(
    tiny_model_dir, tmp_path, caplog, monkeypatch, template
):
    """The demo ingests with --chat when the model has a chat template (the tiny one has), so an
    instruct model is trained inside its template and the warm-up log is free of TRL's "The
    tokenized prompt is not a prefix of the tokenized prompt+completion". The data here makes it
    likely (prompts ending in a space): without a template (a base model, plain text) TRL warns,
    and prefsift says it first, in its own words, with the fix."""
    import logging

    import prefsift.scoring.models
    from prefsift.cli import main as cli
    from prefsift.demo import stages
    from tests.conftest import TINY_PAIRS, write_jsonl

    if not template:
        monkeypatch.setattr(prefsift.scoring.models, "has_chat_template", lambda path: False)
    rows = [{**p, "prompt": f"{p['prompt']} {i} : "} for i in range(5) for p in TINY_PAIRS]
    src = write_jsonl(tmp_path / "spaced.jsonl", rows)
    cfg = DemoConfig(
        db=str(tmp_path / "d.duckdb"), model=str(tiny_model_dir), dataset=str(src), max_length=64
    )
    plan = dict(stages(cfg, str(tiny_model_dir)))
    assert ("--chat" in plan["ingest the data"]) is template
    try:  # accelerate's warning_once remembers messages: forget an earlier test's
        from trl.trainer import dpo_trainer

        dpo_trainer.logger.warning_once.cache_clear()
    except AttributeError:
        pass
    caplog.set_level(logging.WARNING)
    for title in ("ingest the data", "split train / val / eval"):
        assert cli(plan[title]) == 0
    warmup = next(t for t in plan if t.startswith("warm up"))
    assert cli(plan[warmup]) == 0
    trl_said = [r for r in caplog.records if "is not a prefix" in r.getMessage() and r.name.startswith("trl")]
    we_said = [r for r in caplog.records if r.name == "prefsift.train" and "--chat" in r.getMessage()]
    if template:
        assert trl_said == [] and we_said == [], caplog.text
        with connect(cfg.db, read_only=True) as con:
            kinds = set(pairs.get_pairs(con, "demo", columns=("kind",)).column("kind").to_pylist())
        assert kinds == {"conversational"}
    else:
        assert trl_said and we_said, caplog.text


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-stage peaks need Linux")
def test_stage_peak_rss_is_the_stage_alone_not_the_process_so_far():
    import numpy as np

    from prefsift.demo import reset_peak_rss, stage_peak_rss_gib

    big = np.ones(2**28 // 8)  # 256 MiB, touched
    before = stage_peak_rss_gib()
    del big
    assert reset_peak_rss()
    small = np.ones(2**20)  # a small stage after a big one
    after = stage_peak_rss_gib()
    del small
    assert after < before - 0.2, (before, after)  # GiB: the 256 MiB of the earlier stage are gone


def test_the_warmup_stage_title_says_the_epochs_it_runs(tmp_path):
    from prefsift.demo import stages

    for epochs, said in (
        (1.0, "(DPO, LoRA, 1 epoch)"),
        (0.25, "(DPO, LoRA, 0.25 epochs)"),
        (2, "(DPO, LoRA, 2 epochs)"),
    ):
        cfg = DemoConfig(db=str(tmp_path / "d.duckdb"), epochs=epochs)
        ((title, argv),) = [(t, a) for t, a in stages(cfg, "some/model", chat=False) if a[0] == "warmup"]
        assert title.endswith(said), title
        assert argv[argv.index("--epochs") + 1] == str(epochs)
