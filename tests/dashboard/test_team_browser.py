"""Issue #17 in a real browser: the dashboard served for a team signs people in through a local
OpenID Connect provider (the `oidc-provider-mock` package, started by the test) with Streamlit's
own st.login; two people annotate the same pairs, a curator settles a conflict; the history, the
effective decision and the agreement view say so. A visit that has not signed in sees no data."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from browser import (  # noqa: E402
    chromium_browser,
    free_port,
    needs_chromium,
    new_page,
    no_error,
    oidc_provider,
    serve,
    settle,
    sign_in,
    team_secrets,
    wait_text,
)

from prefsift.storage import annotations as A  # noqa: E402
from prefsift.storage import connect  # noqa: E402
from tests.conftest import copy_demo_db  # noqa: E402

pytestmark = [needs_chromium, pytest.mark.browser, pytest.mark.e2e]


def _decide(page, url: str, pair_id: str, force: str, swapped: bool = False) -> None:
    page.goto(f"{url}/inspector?pair={pair_id}&dataset=demo")
    settle(page, "Pair inspector")
    page.locator('[data-testid="stRadio"] label').filter(has_text=re.compile(f"^{force}$")).click()
    if swapped:
        page.get_by_text("labels swapped", exact=True).click()
    page.get_by_role("button", name="Save my decision").click()
    wait_text(page, re.compile("^Saved"))
    settle(page, "Pair inspector")
    no_error(page)


def _shows(page, *texts: str, timeout_ms: int = 120_000) -> str:
    """Wait until the page's text holds every one of `texts` (a rerun may still be drawing the
    part asserted on); return that text. On a timeout the failure names what was missing."""
    try:
        page.wait_for_function(
            "(ts) => ts.every(t => document.body.innerText.includes(t))", arg=list(texts), timeout=timeout_ms
        )
    except Exception:
        body = page.inner_text("body")
        missing = [t for t in texts if t not in body]
        raise AssertionError(f"{missing} not on {page.url} after {timeout_ms / 1000:.0f} s") from None
    return page.inner_text("body")


@contextlib.contextmanager
def _evidence_on_failure(browser, where: Path):
    """On a failure, a screenshot and the text of every open page, named in the error."""
    try:
        yield
    except Exception as exc:
        where.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(p for ctx in browser.contexts for p in ctx.pages):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(where / f"page{i}.png"), full_page=True)
                (where / f"page{i}.txt").write_text(page.url + "\n\n" + page.inner_text("body"))
        raise AssertionError(f"{exc!r}; screenshots and page texts in {where}") from exc


def test_team_signs_in_annotates_and_sees_agreement(demo_db, tmp_path):
    db = copy_demo_db(demo_db, tmp_path / "data")
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT pair_id, prompt FROM pairs WHERE dataset = 'demo' AND split = 'train' ORDER BY row_idx LIMIT 3"
        ).fetchall()
    pids = [r[0] for r in rows]
    port = free_port()
    where = tmp_path / "server"
    with oidc_provider() as issuer:
        team_secrets(where, port, issuer, curators=["carol@example.com"])
        env = {"AUTHLIB_INSECURE_TRANSPORT": "1"}
        with (
            serve(db, where, extra_env=env, port=port, host="localhost") as url,
            chromium_browser() as browser,
            _evidence_on_failure(browser, tmp_path / "failure"),
        ):
            # 1. nobody signed in: a sign-in button, no data (not even through a deep link)
            anon = new_page(browser)
            anon.goto(f"{url}/inspector?pair={pids[0]}&dataset=demo")
            anon.get_by_role("button", name="Sign in").wait_for()
            anon.wait_for_timeout(1500)
            body = anon.inner_text("body")
            assert "sign in" in body.lower()
            assert rows[0][1][:40] not in body and "pairs ·" not in body and "Database:" not in body
            assert "Pair inspector" not in body and "Overview" not in body  # not even the page list

            # 2. alice and bob, each signed in through the provider, decide the same pairs
            alice = sign_in(browser, url, "alice@example.com")
            _shows(alice, "(annotator)")
            _decide(alice, url, pids[0], "force drop")
            _decide(alice, url, pids[1], "force drop")
            _decide(alice, url, pids[2], "rule decides", swapped=True)
            bob = sign_in(browser, url, "bob@example.com")
            _decide(bob, url, pids[0], "force keep")
            _decide(bob, url, pids[1], "force drop")
            _decide(bob, url, pids[2], "rule decides", swapped=True)
            _shows(bob, "alice@example.com", "bob@example.com")  # bob on pair 2, after saving: both decisions
            bob.goto(f"{url}/inspector?pair={pids[0]}&dataset=demo")
            settle(bob, "Pair inspector")
            _shows(bob, "in conflict", "force keep", "force drop")

            # 3. the agreement view: kappa of alice and bob, with its interval and the chance level
            bob.goto(f"{url}/team")
            settle(bob, "Team review")
            no_error(bob)
            text = _shows(
                bob, "alice@example.com · bob@example.com", "Cohen's κ [95% CI]", "chance agreement"
            )
            text = _shows(bob, pids[0], "Recent decisions")  # pids[0] listed in conflict
            conflict_block = text[text.index("Pairs in conflict") :]
            assert pids[1] not in conflict_block.split("Recent decisions")[0]

            # 4. a curator settles the conflict
            carol = sign_in(browser, url, "carol@example.com")
            _shows(carol, "(curator)")
            _decide(carol, url, pids[0], "force drop")
            _shows(carol, "a curator's decision")

    with connect(db, read_only=True) as con:
        hist = A.history(con, "demo", pids[0]).sort_values("event_id")
        eff = A.effective(con, "demo").set_index("pair_id")
        agree = A.agreement(con, "demo", n_boot=200)
    assert list(hist["annotator"]) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert list(hist["role"]) == ["annotator", "annotator", "curator"]
    assert hist["saved_at"].notna().all()
    assert (eff.loc[pids[0], "status"], eff.loc[pids[0], "force"]) == ("curator", "drop")
    assert (eff.loc[pids[1], "status"], eff.loc[pids[1], "force"]) == ("agreed", "drop")
    assert (eff.loc[pids[2], "status"], bool(eff.loc[pids[2], "swapped"])) == ("agreed", True)
    ab = agree[(agree["annotator_a"] == "alice@example.com") & (agree["annotator_b"] == "bob@example.com")]
    assert int(ab["pairs_both"].iloc[0]) == 3 and int(ab["agree"].iloc[0]) == 2
