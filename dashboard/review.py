"""The review queue under the pair inspector: "Next pair to review" walks the pairs this person
has not decided yet, in the order of a signal they choose (storage.annotations.review_queue)."""

from __future__ import annotations

import streamlit as st

from prefsift.dashboard import annotation_form, data, identity

SIGNALS = {
    "disagreement": "largest score disagreement (LossDiff vs IRM ranks)",
    "band_edge": "nearest a band edge (10th / 90th percentile)",
    "noisy": "flagged noisy first",
    "random": "random (fixed order for you)",
}


def _go_next(pair_id: str, target: str | None) -> None:
    # A callback: runs before the inspector's widgets, so it may move the pair.
    if target is None:
        return
    if annotation_form.unsaved(pair_id):
        st.session_state["review_blocked"] = True  # a typed decision is never dropped silently
        return
    st.session_state["inspect_pair"] = target


def render(dataset: str, pair_id: str) -> None:
    me = identity.current()
    if me is None:
        return
    st.subheader("Review queue")
    c = st.columns([3, 2])
    signal = c[0].selectbox(
        "order the pairs you have not decided by", list(SIGNALS), format_func=SIGNALS.get, key="review_signal"
    )
    try:
        got = data.cached("review_queue", dataset, me.name, signal, 2, default=None)
    except data.ERRORS as exc:
        c[0].caption(f"This order is not available: {exc}")
        return
    if got is None:
        return
    queue, remaining = got
    ids = [p for p in queue["pair_id"] if p != pair_id]
    target = ids[0] if ids else None
    c[1].button(
        "Next pair to review ▶",
        key="review_next",
        on_click=_go_next,
        args=(pair_id, target),
        disabled=target is None,
        type="primary",
    )
    c[1].caption(f"{remaining:,} pair(s) you have not decided yet")
    if st.session_state.pop("review_blocked", False):
        st.warning("Save or withdraw your decision on this pair first (it has unsaved changes).")
