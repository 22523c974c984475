"""End to end on a tiny model: warm-up -> validation model -> train on a selection -> evaluate.

Also checks TRL parity: the first logged step of fit-val (computed before any update, at θ)
must equal our own evaluation of θ on the val pairs against π_ref; that holds only if
fit-val's reference is π_ref (the base with adapters disabled), not a copy of θ.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from prefsift.cli import main as cli_main
from prefsift.config import build_config
from prefsift.evaluate import evaluate
from prefsift.progress import read_status
from prefsift.storage import connect
from prefsift.storage import runs as rstore
from prefsift.storage import training as tstore
from prefsift.train import inherit_beta, train
from tests.training.conftest import FAST

pytestmark = pytest.mark.e2e

TRL_NAMES = ("loss", "rewards/margins", "rewards/accuracies", "learning_rate", "epoch")


def _adapter(out: str) -> dict:
    return load_file(str(Path(out) / "adapter_model.safetensors"))


def _metrics(db, run_id):
    with connect(db, read_only=True) as con:
        return tstore.get_metrics(con, run_id)


def test_warmup_fitval_train_evaluate(split_db, tiny_model_dir, capsys, monkeypatch, tmp_path):
    db = split_db
    status = tmp_path / "status.json"
    monkeypatch.setenv("PREFSIFT_STATUS_FILE", str(status))
    sets = [f"--set={k}={v}" for k, v in FAST.items()]
    # 1. warm-up through the CLI (the command wiring, --json on a clean stdout)
    code = cli_main(
        ["warmup", "--db", str(db), "--dataset", "tiny", "--model", str(tiny_model_dir), "--json", *sets]
    )
    assert code == 0
    warm = json.loads(capsys.readouterr().out)
    assert warm["n_pairs"] == 8 and warm["steps"] == 2
    st = read_status(status)  # what the dashboard reads while a job runs
    assert (st["stage"], st["done"], st["total"]) == ("warmup", 2, 2) and "loss" in st
    theta = _adapter(warm["output_dir"])
    lora_b = [v for k, v in theta.items() if "lora_B" in k]
    assert lora_b and all(float(b.abs().max()) > 0 for b in lora_b)  # LoRA B starts at 0: it was trained
    m = _metrics(db, warm["run_id"])
    assert list(m["step"][m["loss"].notna()]) == [1, 2]
    assert all(name in m.columns for name in TRL_NAMES)
    with connect(db, read_only=True) as con:
        model = rstore.get_model(con, "theta")
        run = tstore.get_run(con, warm["run_id"])
    assert model["role"] == "policy" and model["path"] == str(tiny_model_dir)
    # recorded relative to the database's folder, so the database and its work folder can move (#20)
    assert not Path(model["adapter_path"]).is_absolute()
    assert (Path(db).parent / model["adapter_path"]).resolve() == Path(warm["output_dir"]).resolve()
    assert model["lineage"]["dataset"] == "tiny"
    assert run["status"] == "done" and run["output_model"] == model["model_id"]
    assert (Path(warm["output_dir"]) / "prefsift_model.json").exists()
    assert not list(Path(warm["output_dir"]).glob("checkpoint-*"))

    # 2. validation model: continues θ's adapter, same β, reference π_ref
    cfg = inherit_beta(db, "theta", build_config("fit-val", overrides=FAST))
    val = train(db, cfg, "theta", "theta_val", dataset="tiny")
    assert val["n_pairs"] == 4 and val["steps"] == 1
    theta_val = _adapter(val["output_dir"])
    assert theta_val.keys() == theta.keys()
    assert max(float((theta_val[k] - theta[k]).abs().max()) for k in theta) > 0
    step1 = _metrics(db, val["run_id"]).iloc[0]
    ours = evaluate(db, "theta", "tiny", split="val")
    assert ours["n_pairs"] == 4
    assert step1["loss"] == pytest.approx(ours["loss"], rel=1e-4, abs=1e-6)
    assert step1["rewards/margins"] == pytest.approx(ours["mean_margin"], rel=1e-4, abs=1e-6)
    assert abs(ours["mean_margin"]) > 1e-4  # θ differs from π_ref, so the check has teeth

    # 3. final training on a selection, from θ, 2 epochs
    from prefsift.storage import selections as sstore

    with connect(db) as con:
        sstore.create_selection(con, "half", "tiny", rule="random:0.5:seed=0")
    cfg = inherit_beta(db, "theta", build_config("train", overrides=FAST))
    fin = train(db, cfg, "theta", "trained-half", selection="half")
    assert fin["n_pairs"] == 4 and fin["steps"] == 2
    assert max(float((_adapter(fin["output_dir"])[k] - theta[k]).abs().max()) for k in theta) > 0

    # 4. evaluate everything on the held-out eval split; the ledger puts them side by side
    results = {name: evaluate(db, name, "tiny") for name in ("ref", "theta", "theta_val", "trained-half")}
    assert results["ref"]["loss"] == pytest.approx(math.log(2)) and results["ref"]["mean_margin"] == 0
    assert all(r["n_pairs"] == 4 for r in results.values())
    with connect(db, read_only=True) as con:
        led = tstore.ledger(con, "tiny")
    assert set(led["model"]) == {"ref", "theta", "theta_val", "trained-half"}
    row = led[led["model"] == "trained-half"].iloc[0]
    assert row["selection"] == "half" and row["n_kept"] == 4 and row["trained_by"] == "train"
    assert row["loss"] == pytest.approx(results["trained-half"]["loss"])

    # 5. rerunning a finished command does nothing
    again = train(db, cfg, "theta", "trained-half", selection="half")
    assert again["status"] == "already done"
