"""Tune & select: percentile bands for LossDiff, IRM (and IF), live counts and comparisons, save.

The live numbers and the saved selection come from the one selection engine (storage/engine.py),
the one `prefsift select` runs: on the in-memory snapshot a slider move costs milliseconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from prefsift.dashboard import charts, data, identity

st.title("Tune & select")
dataset = data.require_dataset()
runs = data.require_runs(dataset)
labels = data.run_labels(runs)
NONE = "(not used)"
bands_state = st.session_state.setdefault("tune_bands", {})

st.caption(
    "Keep a pair when each chosen score lies inside its percentile band over the train split "
    "(the paper's LossDiff-IRM rule is the intersection of the LossDiff and IRM bands)."
)
parts = []
cols = st.columns(3)
for col, (metric, default_on) in zip(cols, data.TUNE_METRICS):
    opts = [NONE] + list(runs.loc[runs["metric"] == metric, "run_id"])
    default = data.default_run(runs, metric)
    with col:
        st.markdown(f"**{metric.upper() if metric != 'lossdiff' else 'LossDiff'}**")
        run = st.selectbox(
            "score run",
            opts,
            index=opts.index(default) if default and default_on else 0,
            format_func=lambda r: labels.get(r, r),
            key=f"tune_run_{metric}",
        )
        lo, hi = bands_state.get(metric, (10.0, 90.0))
        band = st.slider(
            "percentile band",
            0.0,
            100.0,
            (float(lo), float(hi)),
            step=1.0,
            key=f"tune_band_{metric}",
            disabled=run == NONE,
        )
        bands_state[metric] = band  # kept outside widget state: the Explore page draws these bands
        if run != NONE:
            parts.append((metric, run, band))

st.session_state["tune_parts"] = parts  # Explore draws and counts this same rule
if not parts:
    st.info("Pick at least one score run to select with.")
    st.stop()

tif_run = data.default_run(runs, "tif")
selections = data.cached("selections", dataset, default=pd.DataFrame())
sel_names = list(selections["name"]) if selections is not None and not selections.empty else []
snap = data.snapshot(dataset, [r for _, r, _ in parts] + ([tif_run] if tif_run else []))
if snap is None:
    st.stop()
pool = snap.split_mask("train")
compare: dict[str, np.ndarray] = {}
if tif_run:
    compare["TIF"] = snap.load_run_values(tif_run) == 1
for name in sel_names:
    mask = data.selection_mask(snap, name)
    if "TIF" in compare and np.array_equal(mask & pool, compare["TIF"] & pool):
        continue  # the saved TIF selection is the TIF row already: listed once
    compare[f"selection {name}"] = mask
res = data.evaluate_rule(dataset, parts, compare)

noise = snap.noise_mask()
rand = res["random"]  # a seeded random subset of the same size: the baseline

m = st.columns(5)
frac = res["n_kept"] / res["n_total"] if res["n_total"] else 0.0
m[0].metric("kept", f"{res['n_kept']:,}", help="pairs of the train split the bands keep")
m[1].metric("kept fraction", f"{frac:.1%}")
m[2].metric(
    "missing a score",
    f"{res['n_missing']:,}",
    help="pairs lacking a score the rule reads: dropped"
    + (f" ({res['n_truncated']:,} more are fully truncated: left out)" if res["n_truncated"] else ""),
)
noise_all = res["noisy"] / res["n_total"] if res["n_total"] else 0.0
noise_kept = res["kept_noisy"] / res["n_kept"] if res["n_kept"] else 0.0
noise_rand = rand["noisy"] / rand["n"] if rand["n"] else 0.0
m[3].metric(
    "noisy among kept",
    f"{noise_kept:.1%}",
    delta=f"{noise_kept - noise_rand:+.1%} vs random same size ({noise_rand:.1%})",
    delta_color="inverse",
    help=f"Label-flipped pairs among the kept ones; a random subset of the same size keeps "
    f"{noise_rand:.1%}, all pairs hold {noise_all:.1%}. Lower than random: the rule finds noise.",
)
if "TIF" in res["overlaps"]:
    o = res["overlaps"]["TIF"]
    denom = min(res["n_kept"], o["n"]) or 1
    rand_both = o["random"]
    m[4].metric(
        "overlap with TIF",
        f"{o['both'] / denom:.2f}",
        delta=f"{(o['both'] - rand_both) / denom:+.2f} vs random",
        help="|kept ∩ TIF| / min(|kept|, |TIF|), the paper's overlap coefficient",
    )

thr = {metric: t for (metric, _, _), t in zip(parts, res["thresholds"])}
st.caption(
    "Resolved thresholds: "
    + " · ".join(
        f"{k}: [{t[0]:.4g}, {t[1]:.4g}]" if t[0] is not None else f"{k}: no scores" for k, t in thr.items()
    )
)

hc = st.columns(len(parts))
for col, (metric, run, _band) in zip(hc, parts):
    h = res["hist"][res["hist"]["run"] == run] if not res["hist"].empty else pd.DataFrame()
    col.plotly_chart(
        charts.kept_dropped_fig(h, f"{metric}: kept vs dropped", thr[metric]),
        key=f"tune_hist_{metric}",
        config={"displayModeBar": False},
    )

rows = [  # (rule, kept, noisy among kept, overlap with this rule)
    ("this rule", res["n_kept"], noise_kept, 1.0),
    (
        "random, same size",
        rand["n"],
        rand["noisy"] / max(rand["n"], 1),
        rand["both"] / max(min(rand["n"], res["n_kept"]), 1),
    ),
]
for name, o in res["overlaps"].items():
    mk = compare[name] & pool
    overlap = o["both"] / max(min(res["n_kept"], o["n"]), 1)
    rows.append((name, int(mk.sum()), float((mk & noise).sum() / max(mk.sum(), 1)), overlap))
st.subheader("Compared with")
data.show_table(
    pd.DataFrame(rows, columns=["rule", "kept", "noisy among kept", "overlap with this rule"]),
    column_config={
        "noisy among kept": st.column_config.NumberColumn(format="percent"),
        "overlap with this rule": st.column_config.NumberColumn(format="%.3f"),
    },
)

# ---- save
st.subheader("Save as a selection")
rule_text = data.rule_text(parts)
st.code(rule_text, language=None)
me = identity.current()
if me is not None and not me.is_curator:
    # the server refuses it too (dashboard/data.py): the page does not offer what it will refuse
    st.info(f"Saving selections is for curators: you ({me.name}) can tune and look, not save.")
    st.stop()
sc = st.columns([3, 1, 1])
name = sc[0].text_input("selection name", key="tune_name", placeholder="e.g. ldirm-10-90")
overwrite = sc[1].checkbox("replace if it exists", key="tune_force")
if sc[2].button("Save selection", type="primary", key="tune_save"):
    from prefsift.storage import rules as R
    from prefsift.storage import selections as S

    try:
        rule = R.parse_rule(rule_text)
        out = data.write(
            S.create_selection,
            name.strip(),
            dataset,
            rule,
            {m: r for m, r, _ in parts},
            "train",
            True,
            overwrite,
        )
        if out is data.WRITE_BUSY:
            st.stop()
        st.session_state["tune_saved"] = out["name"]
        st.success(
            f"Saved selection **{out['name']}**: {out['n_kept']:,} of {out['n_total']:,} pairs. "
            "Export it and train on **Export & train**."
        )
    except S.SelectionExists:
        # The page's words, not the CLI's (no --force here: a checkbox).
        st.error(
            f"A selection named **{name.strip()}** already exists. Tick **replace if it exists** to "
            "replace it, or choose another name."
        )
    except data.ERRORS as exc:
        st.error(str(exc))
