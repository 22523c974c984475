"""Explore: score distributions, any two scores against each other, and the pairs behind a selection.

The scatter shows a deterministic hash sample (the same pairs on every rerun); the density
view bins every pair in DuckDB. A box drawn on the chart filters the table by both score
ranges over all pairs; a lasso keeps the sampled points it encloses.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import charts, data
from storage.explore import Filters

st.title("Explore")
dataset = data.require_dataset()
runs = data.require_runs(dataset)
labels = data.run_labels(runs)
ids = list(runs["run_id"])

x0 = data.default_run(runs, "lossdiff") or ids[0]
y0 = data.default_run(runs, "irm") or ids[min(1, len(ids) - 1)]
qp = st.query_params
c = st.columns([3, 3, 2, 2])
x_run = c[0].selectbox(
    "x score",
    ids,
    index=ids.index(qp.get("x", x0)) if qp.get("x") in ids else ids.index(x0),
    format_func=labels.get,
    key="explore_x",
)
y_run = c[1].selectbox(
    "y score",
    ids,
    index=ids.index(qp.get("y", y0)) if qp.get("y") in ids else ids.index(y0),
    format_func=labels.get,
    key="explore_y",
)
colour_opts = ["noise flag", "band region"] + ids
colour = c[2].selectbox(
    "colour",
    colour_opts,
    format_func=lambda r: labels.get(r, r),
    key="explore_colour",
    index=colour_opts.index(data.default_run(runs, "tif")) if data.default_run(runs, "tif") else 0,
)
view = c[3].radio("view", ["sample", "density"], horizontal=True, key="explore_view")

f = st.columns([3, 1, 1, 1])
text = f[0].text_input("Search text (prompt, chosen, rejected)", key="explore_text").strip() or None
split = f[1].selectbox("split", ["all", "train", "val", "eval"], key="explore_split")
noise = f[2].selectbox("noise flag", ["any", "noisy", "clean"], key="explore_noise")
n_sample = f[3].select_slider("sample size", [1000, 2000, 4000, 8000], value=4000, key="explore_n")

latest = {m: data.default_run(runs, m) for m in dict.fromkeys(runs["metric"])}
# Load only what this page shows: the two axes, the colour and the latest run of each metric.
needed = [x_run, y_run] + ([colour] if colour in ids else []) + [r for r in latest.values() if r]
snap = data.snapshot(dataset, list(dict.fromkeys(needed)), text)
if snap is None:
    st.stop()
base = Filters(
    split=None if split == "all" else split, text=text, noise=None if noise == "any" else noise == "noisy"
)

# The bands of the Tune page (percentiles of the train split), drawn on the chart.
metric_of = dict(zip(runs["run_id"], runs["metric"]))
bands_state = st.session_state.get("tune_bands", {})
bx = bands_state.get(metric_of[x_run], (10.0, 90.0))
by = bands_state.get(metric_of[y_run], (10.0, 90.0))
res = data.sq(
    dataset, "tune", [(x_run, bx[0], bx[1], "percentile"), (y_run, by[0], by[1], "percentile")], split="train"
)
xband, yband = res["thresholds"]

# ---- distributions of the latest run of each metric
cols = st.columns(max(1, min(4, len(latest))))
for i, (metric, run) in enumerate(latest.items()):
    with cols[i % len(cols)]:
        fig = charts.histogram_fig(
            data.sq(dataset, "histogram", run, 60, base), labels.get(run, metric), None
        )
        st.plotly_chart(fig, key=f"explore_hist_{metric}", config={"displayModeBar": False})

# ---- the scatter / density with selection
sel_state = st.session_state.get("explore_chart")
box, lasso_ids = None, None
if sel_state and getattr(sel_state, "selection", None):
    s = sel_state.selection
    if s.get("box"):
        b = s["box"][0]
        box = (min(b["x"]), max(b["x"]), min(b["y"]), max(b["y"]))
    elif s.get("lasso") and s.get("points"):
        lasso_ids = tuple(str(p.get("customdata")) for p in s["points"] if p.get("customdata") is not None)

title = f"{labels[x_run]} vs {labels[y_run]}"
if view == "sample":
    color_run = colour if colour in ids else None
    df = data.sq(dataset, "scatter_sample", x_run, y_run, color_run, n_sample, base)
    mode = {"noise flag": "noise", "band region": "region"}.get(colour, labels.get(colour, "score"))
    fig = charts.scatter_fig(
        df, labels[x_run], labels[y_run], mode, xband, yband, f"{title} — {len(df):,} sampled pairs"
    )
else:
    fig = charts.density_fig(
        data.sq(dataset, "bins_2d", x_run, y_run, 80, base),
        labels[x_run],
        labels[y_run],
        xband,
        yband,
        f"{title} — every pair, binned",
    )
st.plotly_chart(fig, key="explore_chart", on_select="rerun", selection_mode=("box", "lasso"))
st.caption(
    f"Bands from **Tune & select** (train split): x {bx[0]:g}–{bx[1]:g} pct, y {by[0]:g}–{by[1]:g} pct. "
    "Draw a box (or lasso) on the chart to filter the table; double-click the chart to clear."
)

# ---- the pair table, paged in SQL
ranges = ()
if box:
    ranges = ((x_run, box[0], box[1]), (y_run, box[2], box[3]))
filters = Filters(split=base.split, text=text, noise=base.noise, ranges=ranges, pair_ids=lasso_ids)
table_runs = list(dict.fromkeys([x_run, y_run] + [r for r in latest.values() if r]))


@st.fragment
def pair_table(filters: Filters, table_runs: list[str], selection_note: str) -> None:
    """The paged table. A fragment: paging or sorting reruns only this part of the page."""
    total = data.sq(dataset, "count", table_runs, filters)
    pc = st.columns([2, 2, 1, 1])
    order_run = pc[0].selectbox(
        "sort by", ["row order"] + table_runs, format_func=lambda r: labels.get(r, r), key="explore_sort"
    )
    desc = (
        pc[1].radio("order", ["descending", "ascending"], horizontal=True, key="explore_desc") == "descending"
    )
    per_page = pc[2].selectbox("rows", [25, 50, 100], index=1, key="explore_rows")
    pages = max(1, math.ceil(total / per_page))
    page = pc[3].number_input(f"page (of {pages:,})", 1, pages, 1, key="explore_page")
    st.caption(f"**{total:,}** pairs match{selection_note}")

    rows = data.sq(
        dataset,
        "page",
        table_runs,
        filters,
        None if order_run == "row order" else order_run,
        desc,
        per_page,
        (int(page) - 1) * per_page,
    )
    if not rows.empty:
        prev = data.cached(
            "previews",
            dataset,
            tuple(rows["pair_id"]),
            100,
            tuple(rows["rid"]),
            default=pd.DataFrame(columns=["pair_id"]),
        )
        rows = rows.merge(prev, on="pair_id", how="left").drop(columns=["rid"])
        rows = rows.rename(columns={f"v{i}": labels[r] for i, r in enumerate(table_runs)})
        rows.insert(0, "open", [data.pair_link(p, dataset) for p in rows["pair_id"]])
        st.dataframe(
            rows,
            hide_index=True,
            width="stretch",
            column_config={"open": st.column_config.LinkColumn("open", display_text="inspect")},
        )
    else:
        st.caption("No pair matches these filters.")


pair_table(filters, table_runs, " (box selection)" if box else " (lasso selection)" if lasso_ids else "")
