"""`prefsift serve`: start the dashboard (Streamlit, headless, usage statistics off)."""

from __future__ import annotations

NAME = "serve"
HELP = "start the dashboard in a browser-less server (open the printed URL)"


def add_arguments(p) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")


def app_path():
    """The installed dashboard/app.py, found without importing the app (or Streamlit)."""
    import importlib.util
    from pathlib import Path

    from prefsift.errors import UserError

    spec = importlib.util.find_spec("dashboard")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the dashboard package is not installed (pip install prefsift)")
    path = Path(list(spec.submodule_search_locations)[0]) / "app.py"
    if not path.exists():
        raise UserError(f"dashboard app not found at {path}")
    return path


def command(args) -> list[str]:
    import sys
    from pathlib import Path

    from storage import resolve_db_path

    db = Path(resolve_db_path(args.db)).resolve()
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.headless",
        "true",
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--browser.gatherUsageStats",
        "false",
        "--server.runOnSave",
        "false",
        # No "Deploy" button or developer menu: a person curating data has no use for them
        # (the same as .streamlit/config.toml, which Streamlit reads only from its working folder).
        "--client.toolbarMode",
        "minimal",
        "--theme.base",
        "light",
        "--theme.primaryColor",
        "#2e7d32",
        "--",
        "--db",
        str(db),
    ]


def run(args):
    import os

    from storage import resolve_db_path

    cmd = command(args)
    db = resolve_db_path(args.db)
    if not db.exists():
        print(f"prefsift serve: note: no database at {db} yet; the dashboard explains how to ingest data.")
    print(
        f"prefsift dashboard on http://{args.host}:{args.port}  (database {db}; Ctrl-C stops it)", flush=True
    )
    env = {**os.environ, "PREFSIFT_DB": str(db.resolve()), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    # Become the server (exec), so that stopping this process stops the dashboard.
    os.execve(cmd[0], cmd, env)
