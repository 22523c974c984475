"""The demo's pipeline end to end (no server), reduced: the tiny model and 40 bundled pairs.

The real default (SmolLM2-135M-Instruct) runs the same stages; see README for its times.
"""

from __future__ import annotations

import pytest

from prefsift.demo import DemoConfig, bundled_dataset, run_demo
from storage import connect, pairs, runs, selections


def test_bundled_dataset_is_shipped():
    lines = bundled_dataset().read_text().splitlines()
    assert len(lines) == 320
    assert sum('"noise": true' in line for line in lines) == 64


@pytest.mark.e2e
def test_demo_pipeline_scores_every_pair_and_reruns_from_cache(tiny_model_dir, tmp_path):
    db = tmp_path / "demo.duckdb"
    cfg = DemoConfig(db=str(db), model=str(tiny_model_dir), limit=40, max_length=64, batch_size=8)
    out = run_demo(cfg, echo=lambda *a: None)
    with connect(db, read_only=True) as con:
        train_ids = set(
            pairs.get_pairs(con, "demo", split="train", columns=("pair_id",)).column("pair_id").to_pylist()
        )
        scores = runs.get_scores(con, "demo")
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
    # a second run recomputes nothing: no new score runs appear
    with connect(db, read_only=True) as con:
        n_runs = len(runs.list_score_runs(con, "demo"))
    again = run_demo(cfg, echo=lambda *a: None)
    with connect(db, read_only=True) as con:
        assert len(runs.list_score_runs(con, "demo")) == n_runs
    assert again["kept"] == out["kept"]
