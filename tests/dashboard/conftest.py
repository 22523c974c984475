"""Fixtures of the dashboard tests: a seeded synthetic database and an AppTest factory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synth import make_db  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A 400-pair database: two policy models, IRM/LossDiff/IF/TIF runs, noise flags, XSS payloads."""
    path = tmp_path_factory.mktemp("dash") / "dash.duckdb"
    info = make_db(path, n=400, seed=0)
    return {"db": path, **info}


@pytest.fixture()
def app(seeded, monkeypatch):
    """An AppTest of the whole app on the seeded database (run it, then switch pages)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PREFSIFT_DB", str(seeded["db"]))

    def make():
        return AppTest.from_file(str(APP), default_timeout=60)

    return make
