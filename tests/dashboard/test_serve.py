"""`prefsift serve` builds a headless, local, stats-free Streamlit command on the installed app;
dashboard exports stay inside the database's exports folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest


def test_serve_command(tmp_path):
    from prefsift.commands import serve

    args = argparse.Namespace(db=str(tmp_path / "x.duckdb"), host="127.0.0.1", port=8599)
    cmd = serve.command(args)
    app = Path(cmd[cmd.index("run") + 1])
    assert app.name == "app.py" and app.parent.name == "dashboard" and app.exists()
    opts = dict(zip(cmd[::1], cmd[1::1]))
    assert opts["--server.headless"] == "true"
    assert opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "8599"
    assert opts["--client.toolbarMode"] == "minimal"  # no "Deploy" button, wherever it is served from
    assert cmd[-3:] == ["--", "--db", str((tmp_path / "x.duckdb").resolve())]


def test_serve_is_a_cli_command():
    from prefsift.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "9000", "--db", "a.duckdb"])
    assert args.port == 9000 and args.host == "127.0.0.1" and args.db == "a.duckdb"


def test_streamlit_config_defaults():
    import tomllib

    cfg = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1" and cfg["server"]["headless"] is True
    assert cfg["browser"]["gatherUsageStats"] is False


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/b", "", ".hidden", "x" * 129])
def test_export_path_refuses_names_that_escape(name, tmp_path, monkeypatch):
    from prefsift.dashboard import data

    monkeypatch.setenv("PREFSIFT_DB", str(tmp_path / "w.duckdb"))
    with pytest.raises(ValueError):
        data.export_path(name, "parquet")


def test_export_path_is_confined(tmp_path, monkeypatch):
    from prefsift.dashboard import data

    monkeypatch.setenv("PREFSIFT_DB", str(tmp_path / "w.duckdb"))
    p = data.export_path("my-sel_1.v2", "jsonl")
    assert p.parent == (tmp_path / "w.prefsift" / "exports").resolve() and p.suffix == ".jsonl"
    with pytest.raises(ValueError, match="formats are parquet and jsonl"):
        data.export_path("ok", "csv")


def test_every_name_a_selection_may_have_can_be_exported(tmp_path, monkeypatch):
    """One name rule for save and export (#20 bug 5): a 100-character name saves, so it exports;
    a name the rule refuses is refused with the rule's words, not blamed on the format."""
    from prefsift.dashboard import data
    from prefsift.storage.selections import check_name

    monkeypatch.setenv("PREFSIFT_DB", str(tmp_path / "w.duckdb"))
    long = "x" * 100
    check_name(long)
    assert data.export_path(long, "parquet").name.startswith(long)
    with pytest.raises(ValueError, match="bad selection name") as err:
        data.export_path("x" * 129, "parquet")
    assert "parquet" not in str(err.value)
