"""Team review: who decided what, agreement between annotators (Cohen's κ with its 95% interval and
the chance level), the pairs in conflict, and the recent history of decisions."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from prefsift.dashboard import annotation_form, data, pair_list

st.title("Team review")
dataset = data.require_dataset()
st.caption(
    "The effective decision of a pair: if a curator decided it, the curators' decision; else the "
    "annotators' when they agree; else the pair is **in conflict** and neither forces it nor swaps "
    "its labels. Selections, exports and every page use it."
)

counts = data.cached("status_counts", dataset, default=None)
people = data.cached("annotator_counts", dataset, default=None)
if counts is None or people is None:
    st.stop()  # busy: the notice is shown
if people.empty:
    st.info("Nobody has recorded a decision on this dataset yet: open a pair in the **Pair inspector**.")
    st.stop()
m = st.columns(4)
m[0].metric("pairs decided", f"{sum(counts.values()):,}")
m[1].metric("by a curator", f"{counts.get('curator', 0):,}")
m[2].metric("agreed / single", f"{counts.get('agreed', 0):,} / {counts.get('single', 0):,}")
m[3].metric("in conflict", f"{counts.get('conflict', 0):,}")

st.subheader("Annotators")
data.show_table(people)

st.subheader("Agreement between annotators")
agree = data.cached("agreement", dataset, default=None)
if agree is None or agree.empty:
    st.caption("Agreement needs two annotators who decided some of the same pairs.")
else:

    def _k(r) -> str:
        if r["pairs_both"] == 0:
            return "no pair in common"
        if math.isnan(r["kappa"]):
            return "undefined (both used one label only)"
        ci = "" if math.isnan(r["kappa_lo"]) else f" [{r['kappa_lo']:.2f}, {r['kappa_hi']:.2f}]"
        return f"{r['kappa']:.2f}{ci}"

    show = pd.DataFrame(
        {
            "annotators": agree["annotator_a"] + " · " + agree["annotator_b"],
            "pairs both decided": agree["pairs_both"],
            "agree": agree["agree"],
            "observed agreement": [f"{x:.2f}" for x in agree["p_observed"]],
            "chance agreement (κ = 0)": [f"{x:.2f}" for x in agree["p_chance"]],
            "Cohen's κ [95% CI]": [_k(r) for r in agree.to_dict("records")],
        }
    )
    # st.table: a handful of rows, as text (readable by screen readers and the browser test)
    st.table(show.set_index("annotators"))
    st.caption(
        "A decision is the selection override and the swap (rule decides, force keep, force drop, "
        "each with or without 'labels swapped'). κ = (observed − chance) / (1 − chance): 0 is the "
        "agreement two people deciding independently with their own frequencies would reach, 1 is "
        "perfect. The interval is a 95% bootstrap over the pairs both decided (2,000 resamples): "
        "with a few dozen pairs it is wide, and an interval reaching 0 cannot tell them from chance."
    )

st.subheader("Pairs in conflict")
conf = data.cached("conflicts", dataset, default=None)
if conf is None or conf.empty:
    st.caption("No pair is in conflict.")
else:
    st.caption(f"{len(conf):,} pair(s); open one to see each annotator's decision and resolve it.")
    lines = [
        f"- [{p}]({data.pair_link(p, dataset)}): {pair_list.md_escape(d)}"
        for p, d in zip(conf["pair_id"].head(200), conf["decisions"].head(200))
    ]
    st.markdown("\n".join(lines))

st.subheader("Recent decisions")
hist = data.cached("history", dataset, None, None, 200, default=None)
if hist is not None and not hist.empty:
    data.show_table(annotation_form.history_frame(hist), key="team_history")
