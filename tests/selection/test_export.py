"""Export: TRL-ready parquet/jsonl + manifest, loadable by `datasets`, trainable by TRL."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from prefsift.storage import connect
from prefsift.storage import rules as R
from prefsift.storage.exports import ExportError, export_selection, manifest_path
from prefsift.storage.selections import create_selection, member_ids

from .conftest import seed_db


def _export(db, name, path, fmt, **kw):
    with connect(db) as con:
        return export_selection(con, name, path, fmt, **kw)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_standard_export_rows_manifest_and_load(syn, tmp_path, fmt):
    with connect(syn["db"]) as con:
        sel = create_selection(con, "ld", "syn")
        ids = set(member_ids(con, "ld"))
    out = tmp_path / f"sel.{fmt}"
    m = _export(syn["db"], "ld", out, fmt)
    assert m["rows"] == sel["n_kept"] == len(ids)
    assert m["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    on_disk = json.loads(manifest_path(out).read_text())
    assert on_disk["sha256"] == m["sha256"] and on_disk["rule_text"] == "lossdiff:10-90 & irm:10-90"
    assert on_disk["resolved"]["thresholds"]["irm:10-90"]["lo"] is not None
    assert on_disk["score_runs"]["irm"]["run_id"] == "syn-irm" and on_disk["score_runs"]["irm"]["config"]
    assert on_disk["counts"]["n_kept"] == len(ids) and on_disk["prefsift_version"]

    import datasets

    ds = datasets.load_dataset("parquet" if fmt == "parquet" else "json", data_files=str(out), split="train")
    assert set(ds.column_names) == {"prompt", "chosen", "rejected", "pair_id"}
    assert set(ds["pair_id"]) == ids
    assert all(isinstance(x, str) for x in ds["prompt"])
    # The text is the stored text, unchanged.
    i = ds["pair_id"].index(sorted(ids)[0])
    n = int(sorted(ids)[0][1:])
    assert ds["chosen"][i].startswith(f"good answer {n} ")
    with connect(syn["db"]) as con:
        assert con.execute("SELECT count(*) FROM exports WHERE selection = 'ld'").fetchone()[0] == 1


def test_conversational_export_is_message_lists(db_path, tmp_path):
    seed_db(db_path, n=40, conversational=True)
    with connect(db_path) as con:
        create_selection(con, "all", "syn", "random:1")
    out = tmp_path / "c.parquet"
    m = _export(db_path, "all", out, "parquet")
    assert m["kind"] == "conversational"
    rows = pq.read_table(out).to_pylist()
    assert rows[0]["prompt"][0]["role"] == "user"
    assert rows[0]["chosen"] == [{"role": "assistant", "content": rows[0]["chosen"][0]["content"]}]
    out2 = tmp_path / "c.jsonl"
    _export(db_path, "all", out2, "jsonl")
    first = json.loads(out2.read_text().splitlines()[0])
    assert first["rejected"][0]["role"] == "assistant" and isinstance(first["prompt"], list)


def test_refuses_overwrite_unless_forced_and_bad_format(syn, tmp_path):
    with connect(syn["db"]) as con:
        create_selection(con, "ld", "syn")
    out = tmp_path / "sel.parquet"
    m1 = _export(syn["db"], "ld", out, "parquet")
    with pytest.raises(ExportError, match="exists"):
        _export(syn["db"], "ld", out, "parquet")
    m2 = _export(syn["db"], "ld", out, "parquet", force=True)
    assert m1["sha256"] == m2["sha256"]  # same selection, same bytes
    with pytest.raises(ExportError, match="CSV"):
        _export(syn["db"], "ld", tmp_path / "x.csv", "csv")
    assert not list(tmp_path.glob(".*tmp*"))


def test_formula_like_text_stays_text(db_path, tmp_path):
    import pyarrow as pa

    from prefsift.storage.pairs import insert_pairs, upsert_dataset

    with connect(db_path) as con:
        upsert_dataset(con, "f", "t", "standard")
        insert_pairs(
            con,
            "f",
            pa.table(
                {
                    "pair_id": ["a"],
                    "row_idx": [0],
                    "split": ["train"],
                    "kind": ["standard"],
                    "prompt": ['=HYPERLINK("http://x")'],
                    "chosen": ["+1+1"],
                    "rejected": ['@SUM(A1)\n"q"'],
                    "noise": [None],
                    "meta": ["{}"],
                }
            ),
        )
        create_selection(con, "s", "f", "random:1")
    _export(db_path, "s", tmp_path / "f.jsonl", "jsonl")
    row = json.loads((tmp_path / "f.jsonl").read_text())
    assert row["prompt"] == '=HYPERLINK("http://x")' and row["rejected"] == '@SUM(A1)\n"q"'


def test_trains_with_trl_dpo(syn, tmp_path, tiny_model_dir):
    """The exported file goes straight into TRL's DPOTrainer (2 steps on the tiny model)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    with connect(syn["db"]) as con:
        create_selection(con, "ld", "syn")
    out = tmp_path / "train.parquet"
    _export(syn["db"], "ld", out, "parquet")
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train").select(range(8))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        per_device_train_batch_size=4,
        max_steps=2,
        max_length=64,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
    )
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(loss == loss for loss in losses)


def test_manifest_names_the_models_behind_the_scores(db_path, tmp_path):
    from prefsift.storage.runs import register_model

    seed_db(db_path, n=30)
    with connect(db_path) as con:
        register_model(con, "theta-fp", "/models/theta", name="theta", role="policy")
        register_model(con, "other-fp", "/models/other", name="other")
        create_selection(con, "ld", "syn")
    m = _export(db_path, "ld", tmp_path / "x.parquet", "parquet")
    assert [x["model_id"] for x in m["models"]] == ["theta-fp"]
    assert m["models"][0]["name"] == "theta"
    assert m["rule"] == {
        "type": "intersect",
        "rules": [R.Band("lossdiff", 10, 90).to_dict(), R.Band("irm", 10, 90).to_dict()],
    }
