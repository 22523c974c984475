"""Real-browser helpers shared by the browser tests: serve a database with `prefsift serve` from a
chosen folder, drive headless Chromium (Debian's) through Playwright, wait for Streamlit to settle,
and fail on any error a person would see."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
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
PAGES = [
    "overview",
    "explore",
    "disagreements",
    "inspector",
    "team",
    "tune",
    "export_train",
    "compare",
    "evidence",
]
TITLES = {
    "overview": "Overview",
    "explore": "Explore",
    "disagreements": "Disagreements",
    "inspector": "Pair inspector",
    "team": "Team review",
    "tune": "Tune & select",
    "export_train": "Export & train",
    "compare": "Compare models",
    "evidence": "Evidence",
}
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)"
)


def screenshots_dir() -> Path:
    """Where browser tests put their screenshots: a temporary folder, unless
    $PREFSIFT_SCREENSHOTS names one (`PREFSIFT_SCREENSHOTS=docs/screenshots ./test.sh -m slow -k journey`
    refreshes the README's). Tests never rewrite tracked files by themselves."""
    target = os.environ.get("PREFSIFT_SCREENSHOTS")
    path = Path(target) if target else Path(tempfile.mkdtemp(prefix="prefsift-shots-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(
    db: Path, cwd: Path, extra_env: dict | None = None, port: int | None = None, host: str = "127.0.0.1"
):
    """`prefsift serve --db DB` run from `cwd` (a folder of the person's choosing); yields its URL
    (http://`host`:port; `host` is only how the browser names this machine: it listens on loopback)."""
    port = port or free_port()
    cwd.mkdir(parents=True, exist_ok=True)
    log_path = cwd / f"serve-{port}.log"
    log = open(log_path, "wb")
    env = {**os.environ, **(extra_env or {})}
    env.pop("PREFSIFT_DB", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefsift", "serve", "--db", str(db), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(cwd),
    )
    url = f"http://{host}:{port}"
    try:
        wait_healthy(url, proc, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_healthy(url: str, proc, log_path: Path, timeout_s: float = 90) -> float:
    """Seconds until Streamlit's health endpoint answers."""
    t0 = time.monotonic()
    while True:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                return time.monotonic() - t0
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
            raise RuntimeError("prefsift serve did not start: " + log_path.read_text()[-2000:])
        time.sleep(0.3)


@contextlib.contextmanager
def chromium_page(width: int = 1500, height: int = 1800):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(TIMEOUT_MS)
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        try:
            yield page
        finally:
            browser.close()


def settle(page, title: str) -> None:
    """Wait until Streamlit has rendered the page's title and finished running the script."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=120_000)
    page.get_by_role("heading", name=title).first.wait_for(timeout=120_000)
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')"
        ' && !document.querySelector(\'[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]\')',
        timeout=120_000,
    )
    # Plotly and the data grid draw after the script ends: wait for their SVG / canvas.
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')].every(e => e.querySelector('.main-svg'))"
        " && [...document.querySelectorAll('[data-testid=\"stDataFrame\"]')].every(e => e.querySelector('canvas'))",
        timeout=120_000,
    )
    page.wait_for_timeout(800)


def goto(page, url: str, name: str) -> None:
    page.goto(f"{url}/" if name == "overview" else f"{url}/{name}")  # the default page lives at /
    settle(page, TITLES[name])


def exceptions(page) -> list[str]:
    """The text of every Streamlit exception box on the page (a traceback a person would see)."""
    return page.locator('[data-testid="stException"]').all_inner_texts()


def no_error(page) -> None:
    """No traceback and no error message anywhere on the page."""
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()
    err = page.locator('[data-testid="stAlertContentError"]')
    assert err.count() == 0, err.first.inner_text()


def wait_text(page, pattern, timeout_s: float = 120) -> str:
    """Wait until some element's text matches `pattern` (a compiled regex); return that text."""
    loc = page.get_by_text(pattern).first
    loc.wait_for(timeout=timeout_s * 1000)
    return loc.inner_text()


def choose(page, label: str, option) -> None:
    """Pick `option` (its text, or a compiled regex) in the selectbox labelled `label`."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option).first.click()


GRID_ROW_PX = 35  # st.dataframe's row (and header) height


def select_row(page, table, row: int) -> None:
    """Tick the selection box of row `row` (0-based, as shown) of an st.dataframe with row
    selection: the grid is a canvas, so click where the row's marker is."""
    table.scroll_into_view_if_needed()
    b = table.bounding_box()
    page.mouse.click(b["x"] + 14, b["y"] + GRID_ROW_PX * (row + 1.5))


# ---------------------------------------------------------------- signing in (issue #17)
@contextlib.contextmanager
def oidc_provider():
    """A local OpenID Connect provider (the `oidc-provider-mock` package) on a free port, in a
    thread of the test; yields its issuer URL. Its authorization page asks for a `sub` (the
    person's name) and signs them in with that name as their e-mail claim."""
    from oidc_provider_mock import run_server_in_thread

    os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on this machine only
    with run_server_in_thread(port=free_port()) as server:
        yield f"http://localhost:{server.server_port}"


def team_secrets(cwd: Path, app_port: int, issuer: str, curators=()) -> Path:
    """`.streamlit/secrets.toml` in `cwd` for st.login with `issuer`, and prefsift's roles."""
    import json

    path = cwd / ".streamlit" / "secrets.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[auth]\n"
        f'redirect_uri = "http://localhost:{app_port}/oauth2callback"\n'
        'cookie_secret = "a-test-secret-that-is-long-enough-0123456789"\n'
        'client_id = "prefsift-test"\n'
        'client_secret = "prefsift-test-secret"\n'
        f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
        "\n[prefsift.roles]\n"
        f"curators = {json.dumps(list(curators))}\n"
    )
    return path


@contextlib.contextmanager
def chromium_browser():
    """A headless Chromium; open each person's page in their own context (cookies) with new_page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, width: int = 1400, height: int = 1600):
    """A page in a fresh browser context: nobody signed in, no cookies shared with other pages."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def sign_in(browser, url: str, who: str):
    """A fresh page that signs `who` in through the app's "Sign in" button and the provider's
    form; returns it on the app's first page, signed in."""
    page = new_page(browser)
    page.goto(url + "/")
    page.get_by_role("button", name="Sign in").click()
    page.locator('input[name="sub"]').fill(who)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(url + "/**")
    settle(page, "Overview")
    page.get_by_text(f"Signed in as {who}").wait_for()
    return page
