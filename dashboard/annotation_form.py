"""The pair inspector's annotation form, safe for several annotators on one pair.

The form remembers the version (`updated_at`) of the annotation it showed and saves only over
that one (storage.explore.save_annotation's optimistic check). If somebody saved the pair in
between, nothing is overwritten: the person is told who won, and the form reloads with the
current values, ready to be changed and saved again.
"""

from __future__ import annotations

import streamlit as st

from prefsift.dashboard import data
from prefsift.storage import explore
from prefsift.storage.errors import AnnotationConflict

FLAGS = ["(none)", "noisy label", "harmful", "low quality", "duplicate", "good example", "other"]
FORCE = ["rule decides", "force keep", "force drop"]


def _keys(pair_id: str) -> dict[str, str]:
    return {w: f"inspect_{w}_{pair_id}" for w in ("flag", "force", "note", "seen")}


def _describe(ann: dict | None) -> str:
    if not ann:
        return "no annotation (it was cleared)"
    force = {"keep": "force keep", "drop": "force drop"}.get(ann.get("force"), "rule decides")
    return f"flag **{ann.get('flag') or '(none)'}**, {force}, note “{ann.get('note') or ''}”"


def render(dataset: str, pair_id: str, ann: dict | None) -> None:
    """The form for one pair; `ann` is the stored annotation (flag, note, force, updated_at) or None."""
    k = _keys(pair_id)
    # The version and values this page shows: taken from the store when the form first appears,
    # and again after a conflict (written into the widgets' state, so the browser shows them too);
    # otherwise moved only by this person's own save.
    reset = st.session_state.pop(f"inspect_ann_reset_{pair_id}", None)
    # (Streamlit forgets a widget's state when a rerun does not draw it, e.g. on another pair.)
    if reset is not None or any(key not in st.session_state for key in k.values()):
        shown = (reset if reset is not None else ann) or {}
        st.session_state[k["seen"]] = shown.get("updated_at")
        st.session_state[k["flag"]] = shown.get("flag") if shown.get("flag") in FLAGS else FLAGS[0]
        st.session_state[k["force"]] = FORCE[{"keep": 1, "drop": 2}.get(shown.get("force"), 0)]
        st.session_state[k["note"]] = shown.get("note") or ""
    notice = st.session_state.pop("inspect_ann_notice", None)
    if notice:
        (st.warning if notice[0] == "conflict" else st.success)(notice[1])
    # Plain widgets in a box, not a form: their values reach the server as they change, so the
    # inspector can ask before a typed note is dropped by "next" / "previous".
    with st.container(border=True):
        fc = st.columns([2, 2])
        flag = fc[0].selectbox("flag", FLAGS, key=k["flag"])
        force = fc[1].radio("selection override", FORCE, horizontal=True, key=k["force"])
        note = st.text_area("note", key=k["note"])
        saved = st.button("Save annotation", type="primary", key=f"inspect_save_{pair_id}")
    if not saved:
        return
    forced = {"force keep": "keep", "force drop": "drop"}.get(force)
    try:
        flag_value = None if flag == "(none)" else flag
        done = data.write(
            explore.save_annotation,
            dataset,
            pair_id,
            flag_value,
            note.strip() or None,
            forced,
            expected=st.session_state[k["seen"]],
        )
        if done is data.WRITE_BUSY:
            st.stop()
        st.session_state[k["seen"]] = (done or {}).get("updated_at")
        st.session_state["inspect_ann_notice"] = (
            "saved",
            "Saved. Forced keep/drop applies to selections saved from now on.",
        )
    except AnnotationConflict as exc:
        # Show what is stored now instead of this person's values (set before the widgets are
        # built on the rerun, see above).
        current = exc.current
        st.session_state[f"inspect_ann_reset_{pair_id}"] = current or {}
        st.session_state["inspect_ann_notice"] = (
            "conflict",
            f"Not saved: someone else saved this pair's annotation after you opened it. "
            f"It now holds {_describe(current)}; the form below shows it. Change it and save again "
            "if you still want your version.",
        )
    except data.errors() as exc:
        st.error(f"Could not save: {exc}")
        return
    st.rerun()
