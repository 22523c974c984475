"""Explore: score distributions, any two scores against each other, and the pairs behind a selection.

The scatter shows a deterministic hash sample (the same pairs on every rerun); the density
view bins every pair in DuckDB. A box drawn on the chart filters the table by both score
ranges over all pairs; a lasso keeps the sampled points it encloses.
"""

from __future__ import annotations

import math

import streamlit as st

from prefsift.dashboard import charts, data, pair_list
from prefsift.storage.explore import Filters
from prefsift.storage.pairs import SPLITS

st.title("Explore")
dataset = data.require_dataset()
runs = data.require_runs(dataset)
labels = data.run_labels(runs)
ids = list(runs["run_id"])

x0 = data.default_run(runs, "lossdiff") or ids[0]
y0 = data.default_run(runs, "irm") or ids[min(1, len(ids) - 1)]
qp = st.query_params
c = st.columns([3, 3, 2, 2])
x_run, y_run = (
    col.selectbox(
        f"{ax} score",
        ids,
        index=ids.index(qp[ax] if qp.get(ax) in ids else default),  # ?x=RUN&y=RUN pick the axes
        format_func=labels.get,
        key=f"explore_{ax}",
    )
    for col, ax, default in ((c[0], "x", x0), (c[1], "y", y0))
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
split = f[1].selectbox("split", ["all", *SPLITS], key="explore_split")
noise = f[2].selectbox("noise flag", ["any", "noisy", "clean"], key="explore_noise")
n_sample = f[3].select_slider("sample size", [1000, 2000, 4000, 8000], value=4000, key="explore_n")

latest = {m: data.default_run(runs, m) for m in dict.fromkeys(runs["metric"])}
rule = data.tune_rule(runs)
# Load only what this page shows: the axes, the colour, the latest run of each metric, Tune's runs.
needed = (
    [x_run, y_run]
    + ([colour] if colour in ids else [])
    + [r for r in latest.values() if r]
    + [r for _m, r, _b in rule]
)
snap = data.snapshot(dataset, list(dict.fromkeys(needed)), text)
if snap is None:
    st.stop()
base = Filters(
    split=None if split == "all" else split, text=text, noise=None if noise == "any" else noise == "noisy"
)

# Tune's rule (the bands and runs chosen on Tune & select, else its defaults), evaluated by the
# same call Tune makes (forced keep/drop included), so the counts here are Tune's counts.
res = data.evaluate_rule(dataset, rule) if rule else None
band_of = {run: t for (_m, run, _b), t in zip(rule, res["thresholds"])} if res else {}
pct_of = {run: b for _m, run, b in rule}
xband, yband = band_of.get(x_run), band_of.get(y_run)

# ---- the scatter / density with selection. The chart's key carries its axes: a box drawn on
# other axes is another chart's selection, so it can never filter this one's table.
chart_key = f"explore_chart_{x_run}_{y_run}_{view}"
sel_state = st.session_state.get(chart_key)
box, lasso_ids = None, None
if sel_state and getattr(sel_state, "selection", None):
    s = sel_state.selection
    if s.get("box"):
        b = s["box"][0]
        box = (min(b["x"]), max(b["x"]), min(b["y"]), max(b["y"]))
    elif s.get("lasso") and s.get("points"):
        lasso_ids = tuple(str(p.get("customdata")) for p in s["points"] if p.get("customdata") is not None)
# Back from the inspector ("← Back to Explore"): the chart forgot its selection when the page was
# left, so the box or lasso the table was filtered by is kept here, drawn, and can be cleared.
came_back = st.session_state.pop("explore_restored", None)
if came_back is not None:
    st.session_state["explore_kept_sel"] = (came_back.get("query") or {}).get("selection")
kept = st.session_state.get("explore_kept_sel")
# (a new box or lasso on the chart, or other axes, replace it)
if box is not None or lasso_ids is not None or not kept or kept.get("chart_key") != chart_key:
    st.session_state.pop("explore_kept_sel", None)
    kept = None
else:
    box, lasso_ids = kept.get("box"), kept.get("lasso_ids")

title = f"{labels[x_run]} vs {labels[y_run]}"
if view == "sample":
    color_run = colour if colour in ids else None
    df = data.sq(dataset, "scatter_sample", x_run, y_run, color_run, n_sample, base)
    mode = {"noise flag": "noise", "band region": "region"}.get(colour, labels.get(colour, "score"))
    if mode == "region" and res is not None and not df.empty:
        df = df.assign(region=data.rule_regions(snap, df["pair_id"], res["kept_mask"], "train"))
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
if kept is not None and box is not None:
    fig.add_shape(type="rect", x0=box[0], x1=box[1], y0=box[2], y1=box[3], line={"dash": "dash", "width": 2})
st.plotly_chart(fig, key=chart_key, on_select="rerun", selection_mode=("box", "lasso"))
if kept is not None:
    kc = st.columns([5, 1])
    kc[0].caption(
        "The table is filtered by the "
        + ("box (dashed)" if box is not None else f"lasso of {len(lasso_ids or ()):,} pairs")
        + " you drew before opening the inspector."
    )
    kc[1].button(
        "Clear selection",
        key="explore_clear_sel",
        on_click=lambda: st.session_state.pop("explore_kept_sel", None),
    )
if res is not None:
    used = " & ".join(f"{m} {b[0]:g}–{b[1]:g} pct" for m, _r, b in rule)
    drawn = [
        f"{ax} {pct_of[r][0]:g}–{pct_of[r][1]:g} pct"
        for ax, r in (("x", x_run), ("y", y_run))
        if r in band_of
    ]
    st.caption(
        f"Tune's rule ({used}, train split, forced keep/drop applied) keeps **{res['n_kept']:,}** of "
        f"{res['n_total']:,} pairs. Bands drawn: {', '.join(drawn) if drawn else 'none (neither axis is in the rule)'}. "
        "Draw a box (or lasso) on the chart to filter the table; double-click the chart to clear it."
    )
else:
    st.caption("Draw a box (or lasso) on the chart to filter the table; double-click the chart to clear it.")
if split == "eval":
    st.info("Eval pairs are held out: they are never scored, so no score chart or score column shows them.")

# ---- distributions of the latest run of each metric (TIF is a 0/1 selection, not a distribution)
hist_runs = {m: r for m, r in latest.items() if r and m != "tif"}
with st.expander("Score distributions", expanded=False):
    cols = st.columns(max(1, min(3, len(hist_runs))))
    for i, (metric, run) in enumerate(hist_runs.items()):
        with cols[i % len(cols)]:
            fig = charts.histogram_fig(
                data.sq(dataset, "histogram", run, 60, base), labels.get(run, metric), band_of.get(run)
            )
            st.plotly_chart(fig, key=f"explore_hist_{metric}", config={"displayModeBar": False})

# ---- the pair table, paged in SQL
ranges = ()
if box:
    ranges = ((x_run, box[0], box[1]), (y_run, box[2], box[3]))
filters = Filters(split=base.split, text=text, noise=base.noise, ranges=ranges, pair_ids=lasso_ids)
table_runs = list(dict.fromkeys([x_run, y_run] + [r for r in latest.values() if r]))


def _describe(order_run: str | None, desc: bool) -> str:
    """What the table lists, in words: the inspector says where a pair came from."""
    parts = []
    if box:
        parts.append(
            f"box selection ({labels[x_run]} {box[0]:.4g}–{box[1]:.4g}, {labels[y_run]} {box[2]:.4g}–{box[3]:.4g})"
        )
    elif lasso_ids:
        parts.append(f"lasso selection ({len(lasso_ids):,} sampled pairs)")
    if split != "all":
        parts.append(f"{split} split")
    if noise != "any":
        parts.append(f"{noise} pairs")
    if text:
        parts.append(f"text contains “{text}”")
    parts.append(
        f"sorted by {labels.get(order_run, order_run)} ({'descending' if desc else 'ascending'})"
        if order_run
        else "in row order"
    )
    return "Explore: " + ", ".join(parts)


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

    order = None if order_run == "row order" else order_run
    rows = data.sq(dataset, "page", table_runs, filters, order, desc, per_page, (int(page) - 1) * per_page)
    if rows.empty:
        st.caption("No pair matches these filters.")
        return
    rows = data.with_previews(dataset, rows)
    rows = rows.rename(columns={f"v{i}": labels[r] for i, r in enumerate(table_runs)})
    # Text first: what a person reads (prompt, chosen, rejected), then the scores.
    text_cols = [c for c in ("prompt", "chosen", "rejected") if c in rows]
    rows = rows[text_cols + [c for c in rows.columns if c not in text_cols]]
    # Next/previous in the inspector walk this query (every matching pair, in this order).
    pair_list.table(
        rows,
        dataset,
        prefix="explore_",
        page="explore",
        label=_describe(order, desc),
        query={
            "runs": tuple(table_runs),
            "filters": filters,
            "order_run": order,
            "descending": desc,
            "selection": {"chart_key": chart_key, "box": box, "lasso_ids": lasso_ids}
            if box or lasso_ids
            else None,
        },
        skip=("explore_chart_", "explore_kept_sel", "explore_clear_sel"),
    )


pair_table(filters, table_runs, " (box selection)" if box else " (lasso selection)" if lasso_ids else "")
