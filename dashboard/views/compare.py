"""Compare models: the same pairs scored under two policy models. If quality were a property of
the data alone, the ranks would agree; the paper's claim is that it depends on the model."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prefsift.dashboard import charts, data, pair_list
from prefsift.storage.explore import Filters

st.title("Compare models")
dataset = data.require_dataset()
runs = data.require_runs(dataset)
runs = runs.assign(policy=runs["policy"].fillna("(unknown)"))
policies = list(dict.fromkeys(runs["policy"]))
if len(policies) < 2:
    st.info(
        "This needs score runs under two different policy models (score runs whose config names "
        f"different policies). Have: {', '.join(policies)}. Score the dataset under a second model "
        "(e.g. `prefsift score --policy OTHER ...`)."
    )
    st.stop()

c = st.columns(2)
pa_ = c[0].selectbox("model A", policies, index=0, key="compare_a")
pb_ = c[1].selectbox("model B", policies, index=1, key="compare_b")
if pa_ == pb_:
    st.warning("Pick two different models.")
    st.stop()

shared = [
    m
    for m in dict.fromkeys(runs["metric"])
    if data.default_run(runs, m, pa_) and data.default_run(runs, m, pb_)
]
if not shared:
    st.info(f"No score was computed under both {pa_} and {pb_}.")
    st.stop()
pairs = {m: (data.default_run(runs, m, pa_), data.default_run(runs, m, pb_)) for m in shared}
snap = data.snapshot(dataset, [r for ab in pairs.values() for r in ab])
if snap is None:
    st.stop()
split = st.radio("split", ["train", "all"], horizontal=True, key="compare_split")
filters = Filters(split=None if split == "all" else split)

corrs = {m: data.sq(dataset, "rank_correlation", ra, rb, filters) for m, (ra, rb) in pairs.items()}
st.subheader("Rank correlation of each score between the two models")
data.show_table(
    pd.DataFrame(
        [(m, c["n"], c["spearman"], c["pearson"]) for m, c in corrs.items()],
        columns=["score", "pairs", "Spearman ρ", "Pearson r"],
    ),
    column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("Spearman ρ", "Pearson r")},
)

st.subheader("Verdict flips")
fc = st.columns([2, 3])
metric = fc[0].selectbox("score", shared, key="compare_metric")
lo, hi = fc[1].slider("keep band (percentiles)", 0.0, 100.0, (10.0, 90.0), step=1.0, key="compare_band")
ra, rb = pairs[metric]
counts, flips = data.sq(dataset, "verdict_flips", ra, rb, lo, hi, 50, filters)
n = max(counts["n"], 1)
k = st.columns(3)
k[0].metric("same verdict", f"{(counts['both'] + counts['neither']) / n:.1%}")
k[1].metric(f"kept only under {pa_}", f"{counts['a_only']:,}")
k[2].metric(f"kept only under {pb_}", f"{counts['b_only']:,}")
st.plotly_chart(
    charts.verdict_fig(counts, pa_, pb_), key="compare_verdicts", config={"displayModeBar": False}
)
if flips.empty:
    st.caption("No pair changes verdict.")
else:
    flips = flips.rename(
        columns={
            "a": f"{metric} · {pa_}",
            "b": f"{metric} · {pb_}",
            "keep_a": f"kept · {pa_}",
            "keep_b": f"kept · {pb_}",
        }
    )
    pair_list.table(
        flips,
        dataset,
        prefix="compare_",
        page="compare",
        label=f"Compare models: {metric} verdict flips, {pa_} vs {pb_}, keep band {lo:g}–{hi:g}",
        note="The pairs whose rank moves the most between the two models among those that change verdict.",
        column_config={r: st.column_config.NumberColumn(format="percent") for r in ("rank_a", "rank_b")},
    )
