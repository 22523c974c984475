"""The wheel as a user gets it: `pip wheel .`, installed into a fresh virtual environment.

prefsift takes one top-level name in site-packages (scoring, storage and the dashboard install as
prefsift.scoring, prefsift.storage and prefsift.dashboard), every module of the source tree is in
the wheel, the dashboard's Streamlit settings ship with it, and `prefsift --version` and
`prefsift serve` work there on the installed code alone: the served session runs the installed
app with the theme of the installed config.toml.

The environment is created with --system-site-packages and, when these tests run in a virtual
environment (the dev setup), a .pth file naming its site-packages folders: torch, Streamlit and
the rest are not installed again. A plain folder line in a .pth adds that folder to sys.path
without running the .pth files inside it, so the dev environment's editable prefsift (a .pth
pointing at the checkout) stays out; the tests check that prefsift comes from the new site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import TINY_PAIRS, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("scoring", "storage", "dashboard")  # top-level folders here, prefsift.<folder> installed
CONFIG = "dashboard/.streamlit/config.toml"  # installed: prefsift/dashboard/.streamlit/config.toml

pytestmark = pytest.mark.e2e


def _run(cmd, **kw) -> str:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, (
        f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout


def _sources() -> dict[str, Path]:
    """Where each .py file of the source tree belongs in the wheel."""
    out = {}
    for top, dest in [("prefsift", "prefsift"), *((f, f"prefsift/{f}") for f in FOLDERS)]:
        # os.walk does not follow links: prefsift/scoring (-> ../scoring) is counted once, as scoring/
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if name.endswith(".py"):
                    rel = Path(dirpath, name).relative_to(ROOT / top).as_posix()
                    out[f"{dest}/{rel}"] = Path(dirpath, name)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    # Built from a copy: building in the checkout would leave build/ and *.egg-info behind.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("prefsift", *FOLDERS):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            dist,
            src,
        ]
    )
    (whl,) = dist.glob("prefsift-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    home = tmp_path_factory.mktemp("user")  # the working folder and HOME: no .streamlit/ of anyone's
    venv = home / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bin_dir / "python"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PREFSIFT_DB")
    }
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    purelib = Path(
        _run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env=env, cwd=home).strip()
    )
    if sys.prefix != sys.base_prefix:
        (purelib / "_prefsift_test_dependencies.pth").write_text(
            "".join(p + "\n" for p in site.getsitepackages())
        )
    _run(
        [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel],
        env=env,
        cwd=home,
    )
    return SimpleNamespace(home=home, py=py, prefsift=bin_dir / "prefsift", purelib=purelib, env=env)


def test_the_wheel_holds_prefsift_only_and_all_of_it(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        assert tops == {"prefsift"}, (
            f"top-level names in the wheel besides prefsift: {sorted(tops - {'prefsift'})}"
        )
        top_level = next((z.read(n) for n in names if n.endswith(".dist-info/top_level.txt")), b"prefsift")
        assert top_level.split() == [b"prefsift"]
        missing = sorted(set(_sources()) - names)
        assert not missing, (
            f"modules of the source tree missing from the wheel (pyproject packages?): {missing}"
        )
        assert f"prefsift/{CONFIG}" in names, "the dashboard's Streamlit settings are not in the wheel"
        assert z.read(f"prefsift/{CONFIG}") == (ROOT / CONFIG).read_bytes()
        assert any(n.startswith("prefsift/data/") for n in names)  # the demo's bundled pairs


def test_installed_prefsift_is_the_wheel(installed):
    probe = (
        "import importlib.util, json, sys\n"
        "import prefsift, prefsift.cli, prefsift.storage, prefsift.scoring.errors, prefsift.dashboard.charts\n"
        "print(json.dumps({'file': prefsift.__file__, 'version': prefsift.__version__,\n"
        f"  'old': {{n: getattr(importlib.util.find_spec(n), 'origin', None) for n in {FOLDERS!r}}},\n"
        f"  'loaded': sorted(m for m in sys.modules if m.split('.')[0] in {FOLDERS!r})}}))"
    )
    got = json.loads(_run([installed.py, "-c", probe], env=installed.env, cwd=installed.home))
    assert Path(got["file"]).is_relative_to(installed.purelib), got["file"]  # not the checkout's prefsift
    assert got["loaded"] == []  # importing prefsift's packages loads no top-level scoring/storage/dashboard
    for name, origin in got["old"].items():
        assert not (installed.purelib / name).exists(), f"{name}/ installed as a top-level package"
        assert origin is None or not Path(origin).is_relative_to(ROOT), f"{name} importable from the checkout"
    assert (installed.purelib / "prefsift" / CONFIG).exists()

    out = _run([installed.prefsift, "--version"], env=installed.env, cwd=installed.home)
    assert out.strip() == f"prefsift {got['version']}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(port: int, timeout_s: float = 180) -> dict:
    """Open a browser-less Streamlit session (the websocket a browser opens), run the page once,
    and return what the server said: its NewSession message and any exception shown."""
    pytest.importorskip("websockets")
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    back = BackMsg()
    back.rerun_script.query_string = ""
    back.rerun_script.page_script_hash = ""
    out = {"new_session": None, "exceptions": [], "finished": False}
    deadline = time.monotonic() + timeout_s
    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"], open_timeout=60) as ws:
        ws.send(back.SerializeToString())
        while time.monotonic() < deadline and not out["finished"]:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                out["new_session"] = msg.new_session
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                if msg.delta.new_element.WhichOneof("type") == "exception":
                    e = msg.delta.new_element.exception
                    out["exceptions"].append(f"{e.type}: {e.message}")
            elif kind == "script_finished":
                out["finished"] = True
    return out


def test_installed_prefsift_serve(installed):
    """`prefsift serve` of the installed package on a tiny database: healthy, and a session runs
    the installed app with the installed config.toml (a value changed there reaches the theme)."""
    env, home = installed.env, installed.home
    db = home / "tiny.duckdb"
    src = write_jsonl(home / "pairs.jsonl", TINY_PAIRS)
    _run([installed.prefsift, "ingest", src, "--name", "tiny", "--db", db], env=env, cwd=home)

    config_file = installed.purelib / "prefsift" / CONFIG
    config = tomllib.loads(config_file.read_text())
    assert config == tomllib.loads((ROOT / CONFIG).read_text())
    # a colour no code of prefsift or Streamlit holds: it can only come from the installed file
    config_file.write_text(config_file.read_text().replace(config["theme"]["primaryColor"], "#123456"))

    port = _free_port()
    log_path = home / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [installed.prefsift, "serve", "--db", db, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=home,
        )
        try:
            t0 = time.monotonic()
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                assert proc.poll() is None and time.monotonic() - t0 < 180, (
                    "prefsift serve did not start: " + log_path.read_text()[-3000:]
                )
                time.sleep(0.5)
            session = _session(port)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    new = session["new_session"]
    assert new is not None and session["finished"], log_path.read_text()[-3000:]
    assert session["exceptions"] == [], session["exceptions"]
    assert Path(new.main_script_path).is_relative_to(installed.purelib)  # the installed app
    theme = new.custom_theme
    assert theme.primary_color == "#123456"
    assert theme.background_color == config["theme"]["backgroundColor"]
    assert theme.secondary_background_color == config["theme"]["secondaryBackgroundColor"]
    assert theme.text_color == config["theme"]["textColor"]
    assert new.config.toolbar_mode == new.config.ToolbarMode.Value(config["client"]["toolbarMode"].upper())
    assert new.config.gather_usage_stats is False
