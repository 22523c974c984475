"""Disagreements: the pairs two scores rank most differently (percent_rank under each run)."""

from __future__ import annotations

import streamlit as st

from prefsift.dashboard import charts, data, pair_list
from prefsift.storage.explore import Filters

st.title("Disagreements")
dataset = data.require_dataset()
runs = data.require_runs(dataset)
labels = data.run_labels(runs)
ids = list(runs["run_id"])
if len(ids) < 2:
    st.info("Disagreements need two score runs (e.g. IRM and LossDiff, or IRM and IF).")
    st.stop()

a0 = data.default_run(runs, "irm") or ids[0]
b0 = data.default_run(runs, "lossdiff") or data.default_run(runs, "if") or ids[1]
if b0 == a0:
    b0 = next(r for r in ids if r != a0)
c = st.columns([3, 3, 2, 1])
a = c[0].selectbox("score A", ids, index=ids.index(a0), format_func=labels.get, key="disagree_a")
b = c[1].selectbox("score B", ids, index=ids.index(b0), format_func=labels.get, key="disagree_b")
shown = {"both": "largest |rank A − rank B|", "a_high": "A ranks higher", "b_high": "B ranks higher"}
direction = c[2].selectbox("show", list(shown), key="disagree_dir", format_func=shown.get)
n = c[3].selectbox("rows", [25, 50, 100], index=1, key="disagree_n")
split = st.radio("split", ["train", "all"], horizontal=True, key="disagree_split")
if a == b:
    st.warning("Pick two different score runs.")
    st.stop()

snap = data.snapshot(dataset, [a, b])
if snap is None:
    st.stop()
filters = Filters(split=None if split == "all" else split)
corr = data.sq(dataset, "rank_correlation", a, b, filters)
m = st.columns(3)
m[0].metric("pairs with both scores", f"{corr['n']:,}")
m[1].metric("Spearman ρ", "–" if corr["spearman"] is None else f"{corr['spearman']:.3f}")
m[2].metric("Pearson r", "–" if corr["pearson"] is None else f"{corr['pearson']:.3f}")

df = data.sq(dataset, "disagreements", a, b, n, 0, filters, direction)
if df.empty:
    st.caption("No pair has both scores.")
    st.stop()
st.plotly_chart(
    charts.ranks_fig(df, labels[a], labels[b], f"The {len(df)} largest rank disagreements"),
    key="disagree_fig",
)
df = data.with_previews(dataset, df, ("prompt",))
pair_list.table(
    df.rename(columns={"a": f"A: {labels[a]}", "b": f"B: {labels[b]}"}),
    dataset,
    prefix="disagree_",
    page="disagreements",
    label=f"Disagreements: {labels[a]} vs {labels[b]}, {shown[direction]}, {split} split",
    note="Ranks are `percent_rank()` over each run's scored pairs (0 = lowest, 1 = highest).",
    column_config={
        "rank_a": st.column_config.NumberColumn("rank A (pct)", format="percent"),
        "rank_b": st.column_config.NumberColumn("rank B (pct)", format="percent"),
        "rank_diff": st.column_config.NumberColumn("A − B", format="%.3f"),
    },
)
