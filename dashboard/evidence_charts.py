"""Pure renderers of the Evidence page: experiment arms and paired differences with their 95%
intervals, overlaps beside their chance ranges, correlations with intervals; and the plain-words
reading of a paired difference. Data in, plotly figures or strings out; no Streamlit, no I/O.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from prefsift.dashboard.charts import CLEAN, DROPPED, KEPT, LAYOUT, _empty

THETA, OTHER = "#757575", "#6a1b9a"
ARM_ORDER = ("selection", "random", "full", "if-low", "if-mid", "if-high", "theta")
ARM_LABELS = {
    "selection": "selection",
    "random": "random (same size)",
    "full": "full split",
    "if-low": "IF low third",
    "if-mid": "IF middle third",
    "if-high": "IF high third",
    "theta": "θ (no further training)",
}
METRICS = {  # metric -> (label, higher is better, the level an untrained model sits at)
    "reward_accuracy": ("reward accuracy", True, 0.5),
    "loss": ("DPO loss", False, math.log(2)),
}
REF_WORDS = {"random": "a same-size random subset", "full": "the full split"}


def arms_frame(metric_result: dict) -> pd.DataFrame:
    """{arm: {mean, lo, hi, n_seeds}} -> one row per arm in a fixed order."""
    arms = metric_result.get("arms", {})
    order = [a for a in ARM_ORDER if a in arms] + [a for a in arms if a not in ARM_ORDER]
    df = pd.DataFrame([arms[a] for a in order], columns=["mean", "lo", "hi", "n_seeds"])
    df.insert(0, "arm", order)
    df.insert(1, "label", [ARM_LABELS.get(a, a) for a in order])
    return df.rename(columns={"n_seeds": "seeds"})


def diffs_frame(metric_result: dict) -> pd.DataFrame:
    """The paired differences [{arm, vs, diff, lo, hi, p}] as rows, in arm order."""
    rows = list(metric_result.get("diffs", []))
    rank = {a: i for i, a in enumerate(ARM_ORDER)}
    rows.sort(key=lambda d: (d["vs"] != "random", rank.get(d["arm"], 99)))
    df = pd.DataFrame(rows, columns=["arm", "vs", "diff", "lo", "hi", "p"])
    names = [f"{ARM_LABELS.get(d['arm'], d['arm'])} − {ARM_LABELS.get(d['vs'], d['vs'])}" for d in rows]
    df.insert(0, "comparison", names)
    return df


def _color(arm: str) -> str:
    return {"selection": KEPT, "random": CLEAN, "full": OTHER, "theta": THETA}.get(arm, DROPPED)


def _interval(mid, lo, hi, **kw) -> dict:
    """Error bars from `mid` down to `lo` and up to `hi` (a 95% interval, or a null range)."""
    return dict(type="data", symmetric=False, array=hi - mid, arrayminus=mid - lo, **kw)


def arms_fig(df: pd.DataFrame, metric: str) -> go.Figure:
    """Each arm's mean on the eval pairs with its 95% interval (error bars); θ's level dotted."""
    label, _, chance = METRICS.get(metric, (metric, True, None))
    title = f"{label} on the held-out pairs (95% intervals)"
    if df is None or df.empty:
        return _empty(title)
    fig = go.Figure(
        go.Scatter(
            x=df["label"],
            y=df["mean"],
            mode="markers",
            marker=dict(size=11, color=[_color(a) for a in df["arm"]]),
            error_y=_interval(df["mean"], df["lo"], df["hi"]),
            customdata=df[["lo", "hi"]].to_numpy(),
            hovertemplate="%{x}: %{y:.4f} [%{customdata[0]:.4f}, %{customdata[1]:.4f}]<extra></extra>",
        )
    )
    if chance is not None:
        fig.add_hline(
            y=chance,
            line_dash="dot",
            line_color=THETA,
            annotation_text="chance" if metric == "reward_accuracy" else "ln 2 (no preference)",
        )
    return fig.update_layout(title=title, yaxis_title=label, height=330, showlegend=False, **LAYOUT)


def diffs_fig(df: pd.DataFrame, metric: str) -> go.Figure:
    """Paired differences with their 95% intervals (a forest plot): an interval across 0 shows nothing."""
    label, higher, _ = METRICS.get(metric, (metric, True, None))
    title = f"paired differences in {label} ({'right' if higher else 'left'} of 0 = better)"
    if df is None or df.empty:
        return _empty(title)
    fig = go.Figure(
        go.Scatter(
            x=df["diff"],
            y=df["comparison"],
            mode="markers",
            marker=dict(size=10, color=[CLEAN if v == "random" else OTHER for v in df["vs"]]),
            error_x=_interval(df["diff"], df["lo"], df["hi"]),
            customdata=df[["lo", "hi", "p"]].to_numpy(),
            hovertemplate=(
                "%{y}: %{x:+.4f} [%{customdata[0]:+.4f}, %{customdata[1]:+.4f}], p %{customdata[2]:.3g}"
                "<extra></extra>"
            ),
        )
    )
    fig.add_vline(x=0, line_color=THETA, line_dash="dot")
    fig.update_yaxes(autorange="reversed")
    return fig.update_layout(
        title=title,
        xaxis_title=f"difference in {label}",
        height=120 + 36 * len(df),
        showlegend=False,
        **{**LAYOUT, "margin": dict(l=20, r=20, t=50, b=45)},
    )


def reading(d: dict, metric: str, n_ref: int | None = None) -> str:
    """One paired difference in plain words, judged by its 95% interval alone."""
    label, higher, _ = METRICS.get(metric, (metric, True, None))
    arm = "the selection" if d["arm"] == "selection" else f"the {ARM_LABELS.get(d['arm'], d['arm'])}"
    ref = REF_WORDS.get(d["vs"], ARM_LABELS.get(d["vs"], d["vs"]))
    if d["vs"] == "full" and n_ref:
        ref += f" (all {n_ref:,} pairs)"
    ci = f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    if d["lo"] > 0 or d["hi"] < 0:
        wins = (d["lo"] > 0) == higher
        verb = "beats" if wins else "does worse than"
        return f"{arm.capitalize()} {verb} {ref} by {ci} in {label} (p {d['p']:.2g})."
    return f"Cannot tell {arm} apart from {ref}: {label} {ci}, an interval that reaches 0 (p {d['p']:.2g})."


def overlap_fig(rows: pd.DataFrame) -> go.Figure:
    """Overlap with TIF of each rule and band, beside a same-size random selection's 95% range."""
    title = "overlap with TIF vs a random selection of the same size"
    if rows is None or rows.empty:
        return _empty(title)
    y = rows["band"].astype(str) + " · " + rows["rule"].astype(str)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=rows["chance"],
            y=y,
            mode="markers",
            name="random: expected, 95% range",
            marker=dict(symbol="line-ns-open", size=14, color=THETA),
            error_x=_interval(rows["chance"], rows["null_lo"], rows["null_hi"], color=THETA),
        )
    )
    fig.add_trace(
        go.Scatter(x=rows["overlap"], y=y, mode="markers", name="observed", marker=dict(size=10, color=KEPT))
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, xaxis_title="overlap coefficient", height=120 + 30 * len(rows), **LAYOUT)
    return fig


def correlation_fig(rows: pd.DataFrame) -> go.Figure:
    """Pearson and Spearman of each score with IF, with 95% intervals and the |r| chance band."""
    title = "correlation with IF (95% intervals; grey band: |r| a chance would reach)"
    if rows is None or rows.empty or "pearson" not in rows:
        return _empty(title)
    rows = rows.dropna(subset=["pearson"])
    if rows.empty:
        return _empty(title)
    y = rows["score"].astype(str) + " · " + rows["subset"].astype(str)
    fig = go.Figure()
    for name, color, symbol in (("pearson", CLEAN, "circle"), ("spearman", OTHER, "diamond-open")):
        fig.add_trace(
            go.Scatter(
                x=rows[name],
                y=y,
                mode="markers",
                name=name.capitalize(),
                marker=dict(size=10, color=color, symbol=symbol),
                error_x=_interval(rows[name], rows[f"{name}_lo"], rows[f"{name}_hi"]),
            )
        )
    c = float(rows["chance_abs_r"].max())
    if math.isfinite(c):
        fig.add_vrect(x0=-c, x1=c, fillcolor=THETA, opacity=0.12, line_width=0)
    fig.add_vline(x=0, line_color=THETA, line_dash="dot")
    fig.update_yaxes(autorange="reversed")
    return fig.update_layout(
        title=title, xaxis_title="r", xaxis_range=[-1, 1], height=140 + 34 * len(rows), **LAYOUT
    )
