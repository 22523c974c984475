"""One-line user errors for the usual failures."""

from __future__ import annotations

import json
import shutil

import pytest

from prefsift.cli import main as cli_main
from prefsift.config import build_config
from prefsift.errors import UserError
from prefsift.models import register_reference
from prefsift.storage import connect
from prefsift.train import train
from tests.conftest import write_jsonl


def test_model_not_found(split_db, tmp_path):
    with pytest.raises(UserError, match="not found"):
        train(split_db, build_config("warmup"), str(tmp_path / "nope"), "theta", dataset="tiny")


def test_cli_unknown_dpo_key_exits_2(split_db, tiny_model_dir, capsys):
    code = cli_main(
        [
            "warmup",
            "--db",
            str(split_db),
            "--dataset",
            "tiny",
            "--model",
            str(tiny_model_dir),
            "--set",
            "betta=0.2",
        ]
    )
    assert code == 2 and "'betta'" in capsys.readouterr().err


def test_empty_selection(split_db, tiny_model_dir):
    from prefsift.storage import selections as sstore

    ref = register_reference(split_db, str(tiny_model_dir))
    with connect(split_db) as con:
        sstore.create_selection(con, "none", "tiny", rule="random:0.0:seed=0")
    with pytest.raises(UserError, match="empty"):
        train(split_db, build_config("train"), ref, "x", selection="none")


def test_no_val_pairs(db_path, tmp_path, tiny_pairs, tiny_model_dir):
    from prefsift.ingest import ingest

    ingest(write_jsonl(tmp_path / "p.jsonl", tiny_pairs), name="only", db=db_path)
    ref = register_reference(db_path, str(tiny_model_dir))
    with pytest.raises(UserError, match="prefsift split"):
        train(db_path, build_config("fit-val"), ref, "v", dataset="only")


def test_conversational_needs_chat_template(db_path, tmp_path, tiny_model_dir):
    from prefsift.ingest import ingest

    plain = tmp_path / "no_template"
    shutil.copytree(tiny_model_dir, plain)
    cfg_file = plain / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("chat_template", None)
    cfg_file.write_text(json.dumps(cfg))
    for f in plain.glob("chat_template.*"):
        f.unlink()
    rows = [
        {
            "prompt": [{"role": "user", "content": f"hi {i}"}],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for i in range(4)
    ]
    ingest(write_jsonl(tmp_path / "c.jsonl", rows), name="conv", db=db_path)
    ref = register_reference(db_path, str(plain))
    with pytest.raises(UserError, match="chat template"):
        train(db_path, build_config("warmup", overrides={"max_length": 32}), ref, "t", dataset="conv")


def test_other_model_in_folder_needs_force(split_db, tiny_model_dir, tmp_path):
    ref = register_reference(split_db, str(tiny_model_dir))
    out = tmp_path / "m"
    out.mkdir()
    (out / "weights.bin").write_text("someone else's")
    with pytest.raises(UserError, match="--force"):
        train(split_db, build_config("warmup"), ref, "m", dataset="tiny", out_dir=out)
