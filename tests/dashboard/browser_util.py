"""Shared helpers of the headless-Chromium tests: serve a database from a chosen folder, settle a page.

`serve(db, cwd)` runs `prefsift serve` on a free port with the server's working folder set to
`cwd` (a folder other than the one the pipeline ran in, as a person would), this checkout's code
first on the path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 120_000  # generous: the test machines are shared and often loaded

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(db: Path, cwd: Path) -> Iterator[str]:
    """`prefsift serve --db DB` started in `cwd`; yields the base URL, stops the server after."""
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFSIFT_DB": str(db)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefsift", "serve", "--db", str(db), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prefsift serve did not start: " + log_path.read_text()[-2000:])
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def settle(page, title: str) -> None:
    """Wait until Streamlit has rendered the page's title and finished running the script."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=TIMEOUT_MS)
    page.get_by_role("heading", name=title).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')"
        ' && !document.querySelector(\'[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]\')',
        timeout=TIMEOUT_MS,
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')].every(e => e.querySelector('.main-svg'))"
        " && [...document.querySelectorAll('[data-testid=\"stDataFrame\"]')].every(e => e.querySelector('canvas'))",
        timeout=TIMEOUT_MS,
    )


def exceptions(page) -> list[str]:
    """The text of every Streamlit exception box on the page (a traceback a person would see)."""
    return page.locator('[data-testid="stException"]').all_inner_texts()
