"""The select / diagnose / export / calibrate commands end to end (in process)."""

from __future__ import annotations

import json

from prefsift.cli import main


def _json(capsys, argv):
    capsys.readouterr()
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if rc == 0 else out


def test_select_diagnose_export_calibrate(syn, tmp_path, capsys):
    db = str(syn["db"])
    rc, out = _json(capsys, ["select", "--db", db, "--dataset", "syn", "--name", "ld"])
    assert rc == 0 and out["selection"]["rule_text"] == "lossdiff:10-90 & irm:10-90"
    assert out["diagnostics"]["noise"]["n_noisy"] > 0

    capsys.readouterr()
    assert main(["select", "--db", db, "--dataset", "syn", "--name", "r", "--rule", "random:0.6:seed=0"]) == 0
    text = capsys.readouterr().out
    assert "saved selection 'r'" in text and "overlap with TIF" in text and "label noise" in text

    # Refuses to overwrite without --force: one line, exit 2.
    assert main(["select", "--db", db, "--dataset", "syn", "--name", "r"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["select", "--db", db, "--dataset", "syn", "--name", "r", "--force"]) == 0

    rc, out = _json(capsys, ["select", "--db", db, "--dataset", "syn", "--rule", "top:irm:7", "--dry-run"])
    assert rc == 0 and out["n_kept"] == 7

    assert main(["select", "--db", db, "--dataset", "syn", "--name", "x", "--rule", "irm:90-10"]) == 2
    assert "lo 90" in capsys.readouterr().err
    assert main(["select", "--db", db, "--dataset", "syn", "--name", "x", "--rule", "tif"]) == 2
    assert "no score run for tif" in capsys.readouterr().err

    rc, out = _json(capsys, ["diagnose", "--db", db, "--selection", "ld"])
    assert rc == 0 and out["tif"]["overlap"] > 0 and {r["other"] for r in out["overlaps"]} == {"r"}
    assert main(["diagnose", "--db", db, "--selection", "nope"]) == 2

    target = tmp_path / "out" / "ld.parquet"
    rc, out = _json(capsys, ["export", "--db", db, "--selection", "ld", "--out", str(target)])
    assert (
        rc == 0
        and target.exists()
        and out["rows"] == json.loads(target.with_name("ld.parquet.manifest.json").read_text())["rows"]
    )
    assert main(["export", "--db", db, "--selection", "ld", "--out", str(target)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--db", db, "--selection", "ld", "--out", str(target), "--force"]) == 0

    rc, out = _json(capsys, ["calibrate", "--db", db, "--dataset", "syn", "--step", "10", "--save", "cal"])
    assert rc == 0 and 0.5 <= out["rule_fraction"] <= 0.7 and out["overlap_tif"] > 0
    rc, out = _json(capsys, ["info", "--db", db, "--dataset", "syn"])
    assert {s["name"] for s in out["selections"]} == {"ld", "r", "cal"}
    assert main(["calibrate", "--db", db, "--dataset", "syn", "--min-kept", "0.9", "--max-kept", "0.1"]) == 2


def test_bad_run_option_and_unknown_run(syn, capsys):
    db = str(syn["db"])
    assert main(["select", "--db", db, "--dataset", "syn", "--name", "z", "--run", "irm"]) == 2
    assert "METRIC=RUN_ID" in capsys.readouterr().err
    assert main(["select", "--db", db, "--dataset", "syn", "--name", "z", "--run", "irm=nope"]) == 2
    assert "nope" in capsys.readouterr().err
