"""The pair inspector's annotation section: this person's own decision, everybody's, the effective
decision and the pair's history (storage/annotations.py has the policy).

Each person edits only their own decision. The form remembers the version (`updated_at`) of
*their* decision it showed and saves only over that one: two people saving the same pair at once
are both kept; the same person saving from two stale tabs is told, and the form reloads with what
is stored, ready to be changed and saved again.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prefsift.dashboard import data, identity
from prefsift.storage import annotations
from prefsift.storage.errors import AnnotationConflict

FLAGS = ["(none)", "noisy label", "harmful", "low quality", "duplicate", "good example", "other"]
FORCE = ["rule decides", "force keep", "force drop"]
SAVED = (
    "Saved. Forced keep/drop and swapped labels reach selections and exports through the effective decision"
)
TOLD = "Not saved: your decision on this pair changed in another tab or window"
FIELDS = ("flag", "force", "swapped", "note")  # the form's widgets, in the order of _values
STATUS = {
    "curator": "a curator's decision",
    "agreed": "the annotators agree",
    "single": "one annotator's decision",
    "conflict": "**in conflict**: annotators disagree, so neither forces the pair nor swaps it until resolved",
}


def _keys(pair_id: str) -> dict[str, str]:
    return {w: f"inspect_{w}_{pair_id}" for w in (*FIELDS, "seen", "saved")}


def _values(d: dict | None) -> tuple:
    d = d or {}
    return (
        d.get("flag") if d.get("flag") in FLAGS else FLAGS[0],
        FORCE[{"keep": 1, "drop": 2}.get(d.get("force"), 0)],
        bool(d.get("swapped") or False),
        d.get("note") or "",
    )


def unsaved(pair_id: str) -> bool:
    """This pair's widgets hold something the person has not saved (False before the form is drawn)."""
    k = _keys(pair_id)
    saved = st.session_state.get(k["saved"])
    if saved is None:
        return False
    now = tuple(st.session_state.get(k[w], saved[i]) for i, w in enumerate(FIELDS))
    return (now[:3], (now[3] or "").strip()) != (saved[:3], (saved[3] or "").strip())


def _mine(bundle: dict, name: str) -> dict | None:
    df = bundle.get("decisions")
    if df is None or df.empty:
        return None
    rows = df[df["annotator"] == name]
    return None if rows.empty else rows.iloc[0].to_dict()


def _load(pair_id: str, shown: dict | None) -> None:
    k = _keys(pair_id)
    values = _values(shown)
    st.session_state[k["seen"]] = (shown or {}).get("updated_at")
    st.session_state[k["saved"]] = values
    for w, v in zip(FIELDS, values):
        st.session_state[k[w]] = v


def render(dataset: str, pair_id: str, bundle: dict) -> None:
    """The annotation section of one pair (`bundle`: dashboard.data's pair bundle)."""
    me = identity.current()
    if me is None:  # the app's gate stops before this; a page run on its own says so
        st.info("Sign in to annotate.")
        return
    k = _keys(pair_id)
    mine = _mine(bundle, me.name)
    # What the form shows: taken from the store when it first appears, again after a conflict;
    # otherwise moved only by this person's own save. (Streamlit forgets a widget's state when a
    # rerun does not draw it, e.g. on another pair.)
    reset = st.session_state.pop(f"inspect_ann_reset_{pair_id}", None)
    if reset is not None or any(key not in st.session_state for key in k.values()):
        _load(pair_id, (reset or None) if reset is not None else mine)
    notice = st.session_state.pop("inspect_ann_notice", None)
    if notice:
        (st.warning if notice[0] == "conflict" else st.success)(notice[1])
    # Plain widgets in a box, not a form: their values reach the server as they change, so the
    # inspector can ask before a typed note is dropped by "next" / "previous".
    with st.container(border=True):
        st.markdown(f"**Your decision** ({me.name}, {me.role})")
        fc = st.columns([2, 3, 2])
        fc[0].selectbox("flag", FLAGS, key=k["flag"])
        fc[1].radio("selection override", FORCE, horizontal=True, key=k["force"])
        fc[2].checkbox(
            "labels swapped",
            key=k["swapped"],
            help="chosen and rejected are the wrong way round: exports write this pair corrected",
        )
        st.text_area("note", key=k["note"])
        bc = st.columns([1, 1, 3])
        save = bc[0].button("Save my decision", type="primary", key=f"inspect_save_{pair_id}")
        withdraw = bc[1].button("Withdraw mine", key=f"inspect_withdraw_{pair_id}", disabled=mine is None)
    if save or withdraw:
        _save(dataset, pair_id, withdraw)
    _others(bundle)


def _save(dataset: str, pair_id: str, withdraw: bool) -> None:
    k = _keys(pair_id)
    flag, force, swapped, note = (st.session_state[k[w]] for w in FIELDS)
    try:
        done = data.decide(
            dataset,
            pair_id,
            expected=st.session_state[k["seen"]],
            withdraw=withdraw,
            **(
                {}
                if withdraw
                else {
                    "flag": None if flag == FLAGS[0] else flag,
                    "note": note,
                    "force": {"force keep": "keep", "force drop": "drop"}.get(force),
                    "swapped": bool(swapped),
                }
            ),
        )
        if done is data.WRITE_BUSY:
            st.stop()
        st.session_state[f"inspect_ann_reset_{pair_id}"] = done or {}
        st.session_state["inspect_ann_notice"] = (
            "saved",
            "Withdrawn: your decision no longer counts (the history keeps it)."
            if withdraw
            else f"{SAVED} made from now on.",
        )
    except AnnotationConflict as exc:
        st.session_state[f"inspect_ann_reset_{pair_id}"] = exc.current or {}
        st.session_state["inspect_ann_notice"] = (
            "conflict",
            f"{TOLD} after this page showed it. It now holds {annotations.describe(exc.current)}; the "
            "form below shows it. Change it and save again if you still want this version.",
        )
    except data.ERRORS as exc:
        st.error(f"Could not save: {exc}")
        return
    st.rerun()


def _others(bundle: dict) -> None:
    """Every annotator's decision, the effective one, and the pair's history."""
    eff = bundle.get("annotation")
    dec = bundle.get("decisions")
    if eff:
        words = annotations.describe(eff) if eff.get("status") != "conflict" else "no override"
        st.markdown(
            f"**Effective decision:** {words} — {STATUS.get(eff.get('status'), eff.get('status'))} "
            f"(decided by {eff.get('decided_by')}; {int(eff.get('n_annotators') or 0)} annotator(s) in all)."
        )
    else:
        st.caption("Effective decision: nobody has decided this pair; the selection rule decides.")
    if dec is not None and not dec.empty:
        st.table(  # a few rows, as text
            pd.DataFrame(
                {
                    "annotator": dec["annotator"],
                    "role": dec["role"],
                    "decision": [annotations.describe(r) for r in dec.to_dict("records")],
                    "saved": dec["updated_at"].astype(str),
                }
            ).set_index("annotator")
        )
    hist = bundle.get("history")
    if hist is not None and not hist.empty:
        with st.expander(f"History of this pair ({len(hist)} change(s))"):
            st.table(history_frame(hist).drop(columns="pair").astype({"when": str}).set_index("when"))


def history_frame(hist: pd.DataFrame) -> pd.DataFrame:
    """A history of decisions (storage.annotations.history), each decision in words."""
    return pd.DataFrame(
        {
            "when": hist["saved_at"],
            "who": hist["annotator"],
            "role": hist["role"],
            "pair": hist["pair_id"],
            "action": hist["action"],
            "before": [annotations.describe(b) for b in hist["before"]],
            "after": [annotations.describe(a) for a in hist["after"]],
        }
    )
