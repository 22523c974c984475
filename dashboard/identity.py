"""Who is using the dashboard, and what they may do.

**Sign-in.** When `.streamlit/secrets.toml` has an `[auth]` section (Streamlit's own `st.login`
with an OpenID Connect provider), everybody signs in, whatever address the server listens on:
a visit that has not signed in sees the sign-in page and nothing else. A person is named by
their e-mail claim (else the provider's `sub`). Without `[auth]` (loopback, one person) the name
comes from `prefsift serve --user NAME`, else $PREFSIFT_USER, else the OS user.

**Roles.** `annotator`: reads everything, records decisions on pairs. `curator`: also saves
selections, exports and starts jobs (training, scoring). Configured in secrets.toml:

    [prefsift.roles]
    curators = ["lead@example.com"]            # everyone else who signs in is an annotator
    annotators = ["a@example.com", "b@example.com"]   # optional: only these (and curators) get in

or with `prefsift serve --curators a@example.com,b@example.com` ($PREFSIFT_CURATORS). Without
sign-in the single local user is a curator. The checks are made where the work is done
(`dashboard.data.write`, `dashboard.data.start_job`), not only by hiding buttons.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import streamlit as st

from prefsift.storage.annotations import local_user

ANNOTATOR, CURATOR = "annotator", "curator"


class NotAllowed(PermissionError):
    """The signed-in person's role does not allow this action (or nobody is signed in)."""


@dataclass(frozen=True)
class Identity:
    name: str  # what decisions and the audit log record
    role: str  # annotator | curator
    display: str  # how the page greets them
    signed_in: bool  # through st.login (False: the local user of a loopback server)

    @property
    def is_curator(self) -> bool:
        return self.role == CURATOR


def _secrets() -> dict:
    try:
        if not st.secrets.load_if_toml_exists():
            return {}
        return st.secrets.to_dict()
    except Exception:  # noqa: BLE001 - a broken secrets file: Streamlit reports it itself
        return {}


def auth_section() -> dict:
    auth = _secrets().get("auth")
    return auth if isinstance(auth, dict) else {}


def providers() -> list[str | None]:
    """The st.login provider arguments: None for a provider set in [auth] itself, else the names
    of its [auth.<name>] tables."""
    auth = auth_section()
    named = [k for k, v in auth.items() if isinstance(v, dict)]
    return ([None] if auth.get("client_id") else []) + named


def _names(value) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        value = value.split(",")
    return {str(v).strip().lower() for v in value if str(v).strip()}


def roles_config() -> tuple[set[str], set[str] | None]:
    """(curators, annotators allowed or None for anyone who signs in), lower-cased."""
    roles = (_secrets().get("prefsift") or {}).get("roles") or {}
    curators = _names(roles.get("curators")) | _names(os.environ.get("PREFSIFT_CURATORS"))
    allowed = roles.get("annotators")
    return curators, (_names(allowed) if allowed is not None else None)


def script_option(name: str) -> str | None:
    """`streamlit run dashboard/app.py -- --NAME VALUE`: what `prefsift serve` passes the app."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(f"--{name}")
    return getattr(parser.parse_known_args(sys.argv[1:])[0], name)


def current() -> Identity | None:
    """This session's person; None when sign-in is configured and they have not signed in, or
    their name is not on the configured list."""
    if not auth_section():
        name = (script_option("user") or "").strip() or local_user()  # prefsift serve --user NAME
        return Identity(name=name, role=CURATOR, display=name, signed_in=False)
    user = st.user
    if not user.get("is_logged_in"):
        return None
    name = str(user.get("email") or user.get("sub") or "").strip()
    if not name:
        return None
    curators, allowed = roles_config()
    key = name.lower()
    if key in curators:
        role = CURATOR
    elif allowed is None or key in allowed:
        role = ANNOTATOR
    else:
        return None
    return Identity(name=name, role=role, display=str(user.get("name") or name), signed_in=True)


def require(role: str, action: str) -> Identity:
    """The current identity if it may do `action` (needs `role`), else NotAllowed."""
    who = current()
    if who is None:
        raise NotAllowed(f"sign in to {action}")
    if role == CURATOR and not who.is_curator:
        raise NotAllowed(f"only curators can {action}; you ({who.name}) are signed in as an annotator")
    return who


def gate() -> Identity:
    """Stop the page unless somebody allowed is signed in (team server); show who it is."""
    who = current()
    if who is None:
        st.title("prefsift")
        if st.user.get("is_logged_in"):
            st.error(
                f"You are signed in as {st.user.get('email') or st.user.get('sub')}, who is not on this "
                "server's list of annotators. Ask its curator to add you."
            )
            st.button("Sign out", on_click=st.logout, key="identity_logout_refused")
        else:
            st.markdown("This prefsift dashboard is shared by a team: sign in to see and annotate its data.")
            for p in providers():
                label = "Sign in" if p is None else f"Sign in with {p}"
                st.button(
                    label,
                    type="primary",
                    on_click=st.login,
                    args=(() if p is None else (p,)),
                    key=f"login_{p}",
                )
        st.stop()
    box = st.sidebar.container()
    box.caption(
        f"Signed in as **{who.display}** ({who.role})"
        if who.signed_in
        else f"You are **{who.name}** ({who.role}, this machine)"
    )
    if who.signed_in:
        box.button("Sign out", on_click=st.logout, key="identity_logout")
    return who
