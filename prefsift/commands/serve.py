"""`prefsift serve`: start the dashboard (Streamlit, headless, usage statistics off)."""

from __future__ import annotations

NAME = "serve"
HELP = "start the dashboard in a browser-less server (open the printed URL)"


def add_arguments(p) -> None:
    add_address_arguments(p)
    p.add_argument(
        "--user",
        help="your name on decisions when nobody signs in (default $PREFSIFT_USER, else the OS user)",
    )
    p.add_argument(
        "--curators",
        help="comma-separated e-mails of the people who may save selections, export and train "
        "(with sign-in; also [prefsift.roles] curators in secrets.toml)",
    )
    add_auth_argument(p)


def add_address_arguments(p) -> None:
    """`--host` and `--port` of `serve` and `demo` (ServeConfig: this machine only by default)."""
    from prefsift.config import ServeConfig, option

    option(p, ServeConfig, "--host", "address to listen on (0.0.0.0: every interface)")
    option(p, ServeConfig, "--port", "port", type=int)


def add_auth_argument(p) -> None:
    """`--insecure-no-auth`, shared with `prefsift demo` (which serves too)."""
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve on a non-loopback address WITHOUT sign-in (anyone who reaches the port can read, "
        "export and start training); by default that is refused unless [auth] is configured",
    )


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` reach this machine only; anything else (0.0.0.0, a LAN
    address, a host name) may be reached from elsewhere."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def secrets_files(cwd=None) -> list:
    """Where Streamlit 1.67 reads secrets.toml when `serve` starts it (its `secrets.files`
    default, later files win): ~/.streamlit/, the working folder's .streamlit/, and the
    .streamlit/ beside the script it runs (dashboard/.streamlit/)."""
    from pathlib import Path

    here = Path(cwd) if cwd is not None else Path.cwd()
    out = [Path.home() / ".streamlit" / "secrets.toml", here / ".streamlit" / "secrets.toml"]
    script_level = app_path().parent / ".streamlit" / "secrets.toml"
    return out if script_level in out else [*out, script_level]


_AUTH_KEYS = ("client_id", "client_secret", "server_metadata_url")


def auth_problem(files) -> str | None:
    """None when an `st.login` OpenID Connect configuration is present: an [auth] section with
    `redirect_uri`, `cookie_secret` and a provider (client_id, client_secret, server_metadata_url,
    in [auth] itself or in an [auth.<provider>] table). Otherwise what is missing."""
    import tomllib

    auth: dict = {}
    for f in files:
        try:
            data = tomllib.loads(f.read_text())
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as exc:
            return f"{f} cannot be read ({exc})"
        if isinstance(data.get("auth"), dict):
            auth.update(data["auth"])  # later files win, key by key, as in Streamlit
    if not auth:
        return "no [auth] section in " + " or ".join(str(f) for f in files)
    missing = [k for k in ("redirect_uri", "cookie_secret") if not auth.get(k)]
    providers = [auth] + [v for v in auth.values() if isinstance(v, dict)]
    if not any(all(p.get(k) for k in _AUTH_KEYS) for p in providers):
        missing.append("a provider (" + ", ".join(_AUTH_KEYS) + ")")
    return f"[auth] lacks {', '.join(missing)}" if missing else None


def check_exposure(host: str, insecure_no_auth: bool, cwd=None, warn=None) -> None:
    """Refuse (UserError) to serve a non-loopback address without sign-in configured, unless the
    user passed --insecure-no-auth (then a warning). Loopback needs nothing."""
    from prefsift.errors import UserError

    if is_loopback(host):
        return
    problem = auth_problem(secrets_files(cwd))
    if problem is None:
        return
    if insecure_no_auth:
        import sys

        (warn or (lambda line: print(line, file=sys.stderr, flush=True)))(
            f"prefsift serve: WARNING: serving {host} WITHOUT authentication (--insecure-no-auth): anyone "
            "who can reach this port can read the data, export it and start training jobs."
        )
        return
    raise UserError(
        f"refusing to serve {host} without sign-in: {problem}; configure st.login (README "
        '"Serving for a team"), serve 127.0.0.1 behind a proxy that authenticates, or pass --insecure-no-auth'
    )


def app_path():
    """The installed prefsift/dashboard/app.py, found without importing the app (or Streamlit)."""
    import importlib.util
    from pathlib import Path

    from prefsift.errors import UserError

    spec = importlib.util.find_spec("prefsift.dashboard")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the dashboard package is not installed (pip install prefsift)")
    path = Path(list(spec.submodule_search_locations)[0]) / "app.py"
    if not path.exists():
        raise UserError(f"dashboard app not found at {path}")
    return path


def config_path():
    """The dashboard's Streamlit settings (theme, toolbar, upload size, server defaults), shipped
    in the package beside the app: prefsift/dashboard/.streamlit/config.toml."""
    return app_path().parent / ".streamlit" / "config.toml"


def config_options(path=None) -> dict[str, str]:
    """The shipped config.toml as `streamlit run` options: {"theme.base": "light", ...}.

    Streamlit reads config.toml from ~/.streamlit/, the working folder's .streamlit/ and, in recent
    versions (1.67 does), the .streamlit/ beside the script it runs. `prefsift serve` passes the
    shipped file's options on the command line too, so they hold from any folder and with any
    Streamlit this project supports."""
    import tomllib

    from prefsift.errors import UserError

    path = path or config_path()
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"the dashboard's settings are missing: {path} (reinstall prefsift)") from None
    return {
        f"{section}.{key}": ("true" if value else "false") if isinstance(value, bool) else str(value)
        for section, options in config.items()
        for key, value in options.items()
    }


def command(args) -> list[str]:
    import sys
    from pathlib import Path

    from prefsift.storage import resolve_db_path

    db = Path(resolve_db_path(args.db)).resolve()
    options = {
        # the shipped settings: theme, no "Deploy" button or developer menu (toolbarMode minimal),
        # error details, upload size ...
        **config_options(),
        # ... and what this command decides whatever the file says: headless, no usage statistics,
        # no rerun on save, the address and port asked for
        "server.headless": "true",
        "browser.gatherUsageStats": "false",
        "server.runOnSave": "false",
        "server.address": args.host,
        "server.port": str(args.port),
    }
    user = ["--user", args.user] if getattr(args, "user", None) else []
    flags = [part for name, value in options.items() for part in (f"--{name}", value)]
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), *flags, "--", "--db", str(db), *user]


def run(args):
    import os

    from prefsift.storage import resolve_db_path

    check_exposure(args.host, args.insecure_no_auth)
    cmd = command(args)
    db = resolve_db_path(args.db)
    if not db.exists():
        print(f"prefsift serve: note: no database at {db} yet; the dashboard explains how to ingest data.")
    print(
        f"prefsift dashboard on http://{args.host}:{args.port}  (database {db}; Ctrl-C stops it)", flush=True
    )
    env = {**os.environ, "PREFSIFT_DB": str(db.resolve()), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    if getattr(args, "curators", None):
        env["PREFSIFT_CURATORS"] = args.curators
    # Become the server (exec), so that stopping this process stops the dashboard.
    os.execve(cmd[0], cmd, env)
