"""Safe defaults: a local-only server, no SQL text from the UI, exports confined to the exports
folder, no remote model code and no pickle unless asked for, newer databases refused."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefsift.cli import build_parser, main
from prefsift.storage import connect
from prefsift.storage.errors import SchemaTooNew, StorageError
from prefsift.storage.schema import SCHEMA_VERSION

from .conftest import property_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("prefsift", "scoring", "storage", "dashboard")


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


# ---------------------------------------------------------------- the server binds 127.0.0.1
def test_serve_defaults_to_localhost():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    from prefsift.commands import serve

    cmd = serve.command(args)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    config = tomllib.loads((ROOT / "dashboard" / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                out.add(addr)
    return out


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_serve_listens_on_loopback_only(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFSIFT_DB": str(tmp_path / "none.duckdb")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefsift",
            "serve",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "none.duckdb"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,  # not the repo: the CLI flags alone must make it local
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            assert proc.poll() is None, "the dashboard exited"
        else:
            pytest.fail("the dashboard did not answer in 90 s")
        addrs = _listening(port)
        assert addrs == {"0100007F"}, f"listening on {addrs} (want 127.0.0.1 only)"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# ------------------------------------------------- no sign-in, no server beyond this machine
@pytest.fixture
def no_secrets(tmp_path, monkeypatch):
    """A home and a working folder without any secrets.toml; os.execve (becoming Streamlit)
    recorded instead of run. Yields the list of commands that would have been exec'd."""
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    execs: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: execs.append(list(argv)))
    return execs


def _serve(tmp_path, *flags: str) -> int:
    return main(["serve", "--db", str(tmp_path / "none.duckdb"), *flags])


def test_serve_on_all_interfaces_without_auth_is_refused(tmp_path, no_secrets, capsys):
    assert _serve(tmp_path, "--host", "0.0.0.0") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "refusing to serve 0.0.0.0 without sign-in" in err
    assert "[auth]" in err and "--insecure-no-auth" in err  # names the fix and the override
    assert no_secrets == []  # Streamlit never started


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "localhost", "::1"])
def test_serve_on_loopback_needs_no_auth(tmp_path, no_secrets, capsys, host):
    assert _serve(tmp_path, "--host", host) == 0
    assert len(no_secrets) == 1 and no_secrets[0][no_secrets[0].index("--server.address") + 1] == host
    assert "WARNING" not in capsys.readouterr().err


def test_serve_insecure_no_auth_starts_with_a_warning(tmp_path, no_secrets, capsys):
    assert _serve(tmp_path, "--host", "0.0.0.0", "--insecure-no-auth") == 0
    assert len(no_secrets) == 1
    assert "WITHOUT authentication (--insecure-no-auth)" in capsys.readouterr().err


def test_serve_with_st_login_configured_starts(tmp_path, no_secrets, capsys):
    secrets = Path.cwd() / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text('[auth]\nredirect_uri = "https://curate.example/oauth2callback"\n')
    assert _serve(tmp_path, "--host", "10.1.2.3") == 2  # an incomplete [auth] is not sign-in
    assert "[auth] lacks cookie_secret, a provider" in capsys.readouterr().err
    secrets.write_text(
        '[auth]\nredirect_uri = "https://curate.example/oauth2callback"\ncookie_secret = "s3cr3t"\n'
        '[auth.company]\nclient_id = "prefsift"\nclient_secret = "x"\n'
        'server_metadata_url = "https://idp.example/.well-known/openid-configuration"\n'
    )
    assert _serve(tmp_path, "--host", "10.1.2.3") == 0
    assert len(no_secrets) == 1 and "WARNING" not in capsys.readouterr().err


def test_demo_on_all_interfaces_without_auth_is_refused_before_its_job(
    tmp_path, no_secrets, monkeypatch, capsys
):
    import prefsift.jobs

    started = []
    monkeypatch.setattr(prefsift.jobs, "start_job", lambda *a, **k: started.append(a) or {})
    assert main(["demo", "--db", str(tmp_path / "d.duckdb"), "--host", "0.0.0.0"]) == 2
    assert "refusing to serve 0.0.0.0" in capsys.readouterr().err
    assert started == [] and no_secrets == []  # no pipeline job left running behind a refusal


# ---------------------------------------------------------------- no SQL text from the UI
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|COPY|ATTACH|PRAGMA|FROM|WHERE)\b")


def test_dashboard_builds_no_sql():
    """The dashboard holds no SQL at all: no f-string or %-/format-built string with SQL words,
    and no call of execute/sql/query; it reads and writes through `storage` functions."""
    offenders = []
    for path in _sources("dashboard"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if SQL_WORDS.search(text):
                    offenders.append(f"{path.name}:{node.lineno} f-string")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("execute", "sql", "query", "executemany", "register"):
                    offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
                if node.func.attr == "format" and isinstance(node.func.value, ast.Constant):
                    if SQL_WORDS.search(str(node.func.value.value)):
                        offenders.append(f"{path.name}:{node.lineno} str.format")
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
                for side in (node.left, node.right):
                    if (
                        isinstance(side, ast.Constant)
                        and isinstance(side.value, str)
                        and SQL_WORDS.search(side.value)
                    ):
                        offenders.append(f"{path.name}:{node.lineno} string building")
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n == "duckdb" or n.startswith("duckdb.") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports duckdb")
    assert offenders == []


def test_storage_functions_reject_unknown_identifiers(tiny_db):
    """Where a storage function the dashboard calls takes a name that becomes SQL text (a table,
    a column, a metric, a selection name), anything off its whitelist is refused."""
    from prefsift.storage import explore, pairs
    from prefsift.storage.explore_snapshot import Filters
    from prefsift.storage.rules import RuleError, parse_rule
    from prefsift.storage.selections import check_name

    evil = ["pairs; DROP TABLE pairs", "x' OR '1'='1", 'm"; DROP TABLE scores; --', "../etc", ""]
    with connect(tiny_db, read_only=True) as con:
        for name in evil:
            with pytest.raises(ValueError):
                explore.overview_table(con, name)
            with pytest.raises(ValueError):
                pairs.get_pairs(con, "tiny", columns=("pair_id", name))
            with pytest.raises(ValueError):
                Filters(split=name)
            with pytest.raises((RuleError, StorageError)):
                parse_rule(f"{name}:10-90")
            with pytest.raises(StorageError):
                check_name(name)
        assert pairs.count_pairs(con, "tiny") == 8  # nothing was dropped


@property_settings(60)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_sql_string_literals_round_trip(text):
    """Where storage inlines a value as a literal (`lit`), any text comes back as itself:
    quotes, backslashes, comment markers and semicolons cannot end the literal."""
    from prefsift.storage.db import lit

    con = duckdb.connect()
    try:
        assert con.execute(f"SELECT {lit(text)} AS v").fetchall() == [(text,)]
    finally:
        con.close()


# ---------------------------------------------------------------- exports stay in the exports folder
@pytest.fixture()
def dashboard_data(tmp_path, monkeypatch):
    db = tmp_path / "work" / "d.duckdb"
    monkeypatch.setenv("PREFSIFT_DB", str(db))
    monkeypatch.setattr(sys, "argv", ["app.py"])
    from prefsift.dashboard import data

    return data, db


def test_dashboard_exports_folder_is_prefsifts(dashboard_data):
    from prefsift.storage.paths import exports_dir

    data, db = dashboard_data
    assert data.exports_dir(data.db_path()) == exports_dir(db).resolve()
    p = data.export_path("my-selection_1.v2", "parquet")
    assert p.parent == exports_dir(db).resolve() and p.suffix == ".parquet"


HOSTILE_NAMES = st.one_of(
    st.sampled_from(["..", "../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "~root", "x\x00y", ".hidden", "a/b", "a\\b", " ", "CON"]),
    st.text(max_size=80),
)  # fmt: skip


@property_settings(200)
@given(name=HOSTILE_NAMES, fmt=st.sampled_from(["parquet", "jsonl", "csv", "../parquet", ""]))
def test_export_path_never_escapes(dashboard_data, name, fmt):
    data, db = dashboard_data
    root = (db.parent / "d.prefsift" / "exports").resolve()
    try:
        p = data.export_path(name, fmt)
    except ValueError:
        return
    assert p.parent == root and fmt in ("parquet", "jsonl") and p.name.startswith(name)
    assert "/" not in name and "\\" not in name and not name.startswith(".")


# ---------------------------------------------------------------- no remote code, no pickle
def test_trust_remote_code_defaults_off_and_is_passed_through(monkeypatch):
    import transformers

    from prefsift.scoring import models

    assert models.ModelSpec(path="x").trust_remote_code is False
    seen = []

    def fake(path, **kw):
        seen.append(kw.get("trust_remote_code", "absent"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(fake))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(fake))
    for trust in (False, True):
        spec = models.ModelSpec(path="some/hub-id", device="cpu", trust_remote_code=trust)
        for load in (models.load_model, models.load_tokenizer):
            with pytest.raises(models.ModelLoadError):
                load(spec)
    assert seen == [False, False, True, True]


def test_no_command_turns_remote_code_on():
    """No CLI option defaults to trusting remote code, and no code path sets it True itself."""
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for a in action._actions:
            if "trust" in a.dest:
                assert a.default in (False, None), a.dest
    for path in _sources(*PACKAGES):
        src = path.read_text()
        assert not re.search(r"trust_remote_code\s*=\s*True", src), path


def _evil_model(src: Path, dst: Path, marker: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return dst


def test_remote_code_in_a_model_folder_does_not_run(tiny_model_dir, tmp_path):
    from prefsift.scoring.models import ModelLoadError, ModelSpec, load_model, load_tokenizer

    marker = tmp_path / "REMOTE_CODE_RAN"
    path = _evil_model(tiny_model_dir, tmp_path / "evil_model", marker)
    spec = ModelSpec(path=str(path), device="cpu")
    for load in (load_model, load_tokenizer):
        try:
            load(spec)
        except ModelLoadError:
            pass
    assert not marker.exists(), "model code from the folder ran without trust_remote_code"


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_do_not_execute(tiny_model_dir, tmp_path):
    """A folder with only a pickle checkpoint (pytorch_model.bin) whose unpickling would run
    code: loading it must not run that code (torch's weights_only loader refuses it)."""
    from prefsift.scoring.models import ModelSpec, load_model

    marker = tmp_path / "PICKLE_RAN"
    path = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, path)
    for f in path.glob("*.safetensors"):
        f.unlink()
    (path / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _Evil(str(marker))}))
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; running the payload will not
        load_model(ModelSpec(path=str(path), device="cpu"))
    assert not marker.exists()


UNSAFE_CALLS = {
    "pickle": {"load", "loads", "Unpickler"},
    "dill": {"load", "loads"},
    "joblib": {"load"},
    "cloudpickle": {"load", "loads"},
    "marshal": {"load", "loads"},
    "shelve": {"open"},
}


def test_no_pickle_or_eval_in_the_code():
    """No module of prefsift unpickles, evals or runs a shell: `torch.load` only with
    weights_only=True, `numpy.load` never with allow_pickle=True, no pandas.read_pickle,
    no yaml.load, no eval/exec, no shell=True."""
    offenders = []
    for path in _sources(*PACKAGES):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("eval", "exec", "__import__") and f.id != "__import__":
                offenders.append(f"{where} {f.id}()")
            if not isinstance(f, ast.Attribute):
                continue
            owner = f.value.id if isinstance(f.value, ast.Name) else None
            if owner in UNSAFE_CALLS and f.attr in UNSAFE_CALLS[owner]:
                offenders.append(f"{where} {owner}.{f.attr}")
            if owner == "torch" and f.attr == "load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    offenders.append(f"{where} torch.load without weights_only=True")
            if owner in ("np", "numpy") and f.attr == "load":
                ap = kw.get("allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    offenders.append(f"{where} numpy.load(allow_pickle=...)")
            if f.attr == "read_pickle" or (owner == "yaml" and f.attr in ("load", "unsafe_load")):
                offenders.append(f"{where} {owner}.{f.attr}")
            sh = kw.get("shell")
            if isinstance(sh, ast.Constant) and sh.value is True:
                offenders.append(f"{where} shell=True")
    assert offenders == []


# ---------------------------------------------------------------- a newer database is refused
def _bump_version(db: Path) -> None:
    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (?, 'from the future')", [SCHEMA_VERSION + 1]
    )
    con.close()


def test_newer_database_is_refused(tmp_path, capsys):
    db = tmp_path / "future.duckdb"
    with connect(db):
        pass
    _bump_version(db)
    size = db.stat().st_size
    for ro in (True, False):
        with pytest.raises(SchemaTooNew, match="newer"):
            with connect(db, read_only=ro):
                pass
    assert main(["info", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "newer" in err[0] and "Traceback" not in err[0]
    con = duckdb.connect(str(db), read_only=True)  # untouched: no migration was tried
    assert con.execute("SELECT max(version) FROM schema_migrations").fetchall()[0][0] == SCHEMA_VERSION + 1
    con.close()
    assert db.stat().st_size == size


def test_newer_database_refused_in_a_fresh_process(tmp_path):
    """Also where this process never opened the file before (no migration cache)."""
    db = tmp_path / "future2.duckdb"
    with connect(db):
        pass
    _bump_version(db)
    out = subprocess.run(
        [sys.executable, "-m", "prefsift", "info", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "newer" in out.stderr and "Traceback" not in out.stderr


def test_shards_are_flushed_to_disk_before_they_are_renamed(tmp_path, monkeypatch):
    """A shard is fsynced (file, then its folder) around the rename: whole or absent after a power cut."""
    import os

    import pyarrow as pa

    from prefsift import shards

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    shards.write_shard(tmp_path, 0, pa.table({"pair_id": ["a", "b"], "x": [1.0, 2.0]}))
    assert calls == ["fsync", "replace", "fsync"]
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("shard-r000-") and files[0].suffix == ".parquet"
    assert shards.read_shards(tmp_path).num_rows == 2
