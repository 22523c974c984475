"""The `prefsift` command line.

Every subcommand lives in its own module under `prefsift/commands/` and exposes
`NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> dict | int | None`. Heavy imports
(torch, transformers, trl) happen inside `run`, so `prefsift --help` and light commands
start fast. Shared conventions: `--db` (default ./prefsift.duckdb or $PREFSIFT_DB),
`--json` (a machine-readable summary on stdout), one-line errors with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import pkgutil
import sys

import prefsift.commands as commands_pkg
from prefsift import __version__

# Errors that are the user's to fix: one line, exit 2, no traceback.
USER_ERROR_TYPES: tuple[str, ...] = (
    "prefsift.errors.UserError",
    "prefsift.storage.errors.StorageError",
    "prefsift.scoring.errors.ScoringError",
)


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"prefsift.commands.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            yield mod


def common_arguments(p: argparse.ArgumentParser, defaults: bool = True) -> argparse.ArgumentParser:
    """--db, --json, -v: accepted before the command (`prefsift --db X ingest …`, as in git) and
    after it. The command's copies default to "not given" (SUPPRESS), so that they never
    overwrite a value given before the command; the closer one wins when both are given."""

    def default(value):
        return value if defaults else argparse.SUPPRESS

    p.add_argument(
        "--db", default=default(None), help="DuckDB file (default: $PREFSIFT_DB or ./prefsift.duckdb)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print a machine-readable JSON summary on stdout",
    )
    p.add_argument("-v", "--verbose", action="count", default=default(0), help="more logging (-vv for debug)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefsift",
        description="Find the preference pairs that actually help your model.",
    )
    parser.add_argument("--version", action="version", version=f"prefsift {__version__}")
    common_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = common_arguments(argparse.ArgumentParser(add_help=False), defaults=False)
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP), parents=[parent]
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _is_user_error(exc: BaseException) -> bool:
    for cls in type(exc).__mro__:
        if f"{cls.__module__}.{cls.__qualname__}" in USER_ERROR_TYPES:
            return True
    return False


def _print_summary(result, as_json: bool) -> None:
    if result is None or isinstance(result, int):
        return
    if as_json:
        public = (
            {k: v for k, v in result.items() if not k.startswith("_")} if isinstance(result, dict) else result
        )
        print(json.dumps(json_ready(public), indent=2, allow_nan=False))
    elif isinstance(result, dict) and "_text" in result:
        print(result["_text"])


def json_ready(value):
    """Strict JSON values (what jq and JavaScript read): null for missing (None, NaN, NaT, NA),
    numbers for numpy scalars, ISO 8601 for dates, text for anything else."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_ready(v) for v in value]
    if type(value).__module__ == "numpy":
        value = value.tolist()  # scalars -> Python numbers, arrays -> lists
        if isinstance(value, list):
            return json_ready(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        if value != value:  # NaT
            return None
    except TypeError:  # pandas.NA refuses comparisons: it is missing
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        result = args._run(args)
    except KeyboardInterrupt:
        print("prefsift: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI boundary
        if _is_user_error(exc):
            print(f"prefsift {args.command}: error: {exc}", file=sys.stderr)
            return 2
        memory = type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
        if memory:
            print(
                f"prefsift {args.command}: error: out of memory ({str(exc).splitlines()[0][:200]}). "
                "Hint: lower --batch-tokens (training keeps its batch whole), use --dtype bfloat16, or --max-length.",
                file=sys.stderr,
            )
            return 3
        raise
    try:
        _print_summary(result, args.json)
    except BrokenPipeError:  # `prefsift info | head`
        sys.stderr.close()
    if isinstance(result, dict):
        return int(result.get("_exit", 0))
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
