"""Pure renderers: a DataFrame in, a plotly figure (or escaped HTML) out. No Streamlit, no I/O.

Everything textual that comes from the data is passed to plotly as data (never as HTML
markup) or escaped with `html.escape` before it joins our own markup.
"""

from __future__ import annotations

import difflib
import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

KEPT, DROPPED, NOISY, CLEAN = "#2e7d32", "#c62828", "#e65100", "#1565c0"
DENSITY_SCALE = [[0.0, "#8fb9dc"], [0.5, "#2f7ebc"], [1.0, "#08306b"]]
DISAGREE_SCALE = [[0.0, "#f4a261"], [0.5, "#d62828"], [1.0, "#6a040f"]]
REGION_FILL = {"kept": "rgba(46,125,50,0.07)"}
LAYOUT = dict(
    template="plotly_white", margin=dict(l=50, r=20, t=50, b=45), legend=dict(orientation="h", y=-0.18)
)


def _empty(title: str, msg: str = "nothing to show") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, **LAYOUT)


def _bins(df: pd.DataFrame) -> dict:
    """Bar positions and widths of a binned score (bin_lo, bin_hi)."""
    return dict(x=(df["bin_lo"] + df["bin_hi"]) / 2, width=df["bin_hi"] - df["bin_lo"])


def histogram_fig(
    df: pd.DataFrame, title: str, band: tuple[float | None, float | None] | None = None
) -> go.Figure:
    """Bars of a binned score (bin_lo, bin_hi, count), with an optional kept band shaded."""
    if df is None or df.empty:
        return _empty(title)
    fig = go.Figure(
        go.Bar(
            **_bins(df),
            y=df["count"],
            marker_color=CLEAN,
            hovertemplate="%{x:.4g}: %{y} pairs<extra></extra>",
        )
    )
    if band and band[0] is not None and band[1] is not None:
        fig.add_vrect(x0=band[0], x1=band[1], fillcolor=KEPT, opacity=0.12, line_width=0)
    return fig.update_layout(title=title, bargap=0, yaxis_title="pairs", height=260, **LAYOUT)


def kept_dropped_fig(
    df: pd.DataFrame, title: str, band: tuple[float | None, float | None] | None = None
) -> go.Figure:
    """Stacked kept/dropped bars of one score (bin_lo, bin_hi, kept, dropped)."""
    if df is None or df.empty:
        return _empty(title)
    fig = go.Figure()
    fig.add_bar(**_bins(df), y=df["kept"], name="kept", marker_color=KEPT)
    fig.add_bar(**_bins(df), y=df["dropped"], name="dropped", marker_color=DROPPED, opacity=0.75)
    for x in band or ():
        if x is not None and math.isfinite(x):
            fig.add_vline(x=x, line_dash="dash", line_color="#333")
    fig.update_layout(title=title, barmode="stack", bargap=0, yaxis_title="pairs", height=280, **LAYOUT)
    return fig


def scatter_fig(
    df: pd.DataFrame,
    x_label: str,
    y_label: str,
    color: str = "noise",
    xband: tuple[float, float] | None = None,
    yband: tuple[float, float] | None = None,
    title: str = "",
) -> go.Figure:
    """Sampled pairs (pair_id, x, y, color, noise): coloured by the noise flag, a score or the
    rule's verdict (column `region`); the bands drawn as lines and the regions labelled."""
    if df is None or df.empty:
        return _empty(title, "no pair has both scores")
    fig = go.Figure()

    def points(d: pd.DataFrame, name: str, color, opacity: float = 0.55, **marker) -> None:
        fig.add_scattergl(
            x=d["x"],
            y=d["y"],
            mode="markers",
            name=name,
            customdata=d["pair_id"],
            marker=dict(size=5, color=color, opacity=opacity, **marker),
            hovertemplate="%{customdata}<br>x=%{x:.4g}<br>y=%{y:.4g}<extra></extra>",
        )

    if color == "noise":
        for flag, name, c in ((False, "clean", CLEAN), (True, "noisy (label flipped)", NOISY)):
            points(df[df["noise"] == flag], name, c)
    elif color == "region":
        # The rule's verdict per point (column `region`: Tune's own evaluation by the engine,
        # forced keep/drop included, never redrawn from the band rectangle); no rule keeps all.
        regions = df["region"] if "region" in df else pd.Series("kept", index=df.index)
        palette = {"kept": KEPT, "dropped": DROPPED, "not in the train split": "#9e9e9e"}
        for r, c in palette.items():
            d = df[regions == r]
            if r == "kept" or not d.empty:
                points(d, f"{r} ({len(d)})", c)
    elif set(df["color"].dropna().unique()) <= {0.0, 1.0}:
        # A 0/1 score (TIF): two named colours instead of a continuous scale.
        for flag, name, c in ((1.0, f"{color} = 1", KEPT), (0.0, f"{color} = 0", "#9e9e9e")):
            d = df[df["color"] == flag]
            points(d, f"{name} ({len(d)})", c, 0.6)
    else:
        points(
            df,
            color,
            df["color"],
            0.6,
            colorscale="Viridis",
            showscale=True,
            colorbar=dict(title=color, thickness=12),
        )
    return _xy_layout(fig, df["x"], df["y"], xband, yband, x_label, y_label, title)


def _xy_layout(fig, xs, ys, xband, yband, x_label, y_label, title) -> go.Figure:
    """A score-against-score figure's axes and layout (a box or lasso selects), and the rule's bands."""
    _draw_bands(fig, xs, ys, xband, yband, x_label, y_label)
    return fig.update_layout(
        title=title, xaxis_title=x_label, yaxis_title=y_label, height=520, dragmode="select", **LAYOUT
    )


def _draw_bands(fig, xs, ys, xband, yband, x_label, y_label) -> None:
    """The rule's bands: a band only for an axis whose score the rule uses (None: not drawn),
    the kept rectangle where both are, and region labels naming only the bands drawn."""
    xb = xband if xband and None not in xband else None
    yb = yband if yband and None not in yband else None
    if xb is None and yb is None:
        return
    x0, x1 = float(np.nanmin(xs)), float(np.nanmax(xs))
    y0, y1 = float(np.nanmin(ys)), float(np.nanmax(ys))
    rx, ry = xb or (x0, x1), yb or (y0, y1)
    fig.add_shape(
        type="rect",
        x0=rx[0],
        x1=rx[1],
        y0=ry[0],
        y1=ry[1],
        line=dict(color=KEPT, width=2),
        fillcolor=REGION_FILL["kept"],
        layer="below",
    )
    for v in xb or ():
        fig.add_vline(x=v, line_dash="dot", line_color="#555")
    for v in yb or ():
        fig.add_hline(y=v, line_dash="dot", line_color="#555")
    cx, cy = (rx[0] + rx[1]) / 2, (ry[0] + ry[1]) / 2
    lx, ly = (x0 + rx[0]) / 2, (y0 + ry[0]) / 2
    labels = [(cx, cy, "kept")]
    if xb:
        labels.append((lx, cy, f"dropped by {x_label}"))
    if yb:
        labels.append((cx, ly, f"dropped by {y_label}"))
    if xb and yb:
        labels += [(lx, ly, "dropped by both"), ((rx[1] + x1) / 2, (ry[1] + y1) / 2, "dropped by both")]
    for x, y, text in labels:
        fig.add_annotation(
            x=x,
            y=y,
            text=text,
            showarrow=False,
            font=dict(size=11, color="#222"),
            bgcolor="rgba(255,255,255,0.75)",
        )


def density_fig(
    df: pd.DataFrame, x_label: str, y_label: str, xband=None, yband=None, title: str = ""
) -> go.Figure:
    """A 2-D histogram (x_lo, x_hi, y_lo, y_hi, count) of every pair, log colour scale."""
    if df is None or df.empty:
        return _empty(title, "no pair has both scores")
    xs = np.sort(df["x_lo"].unique())
    ys = np.sort(df["y_lo"].unique())
    grid = df.pivot_table(index="y_lo", columns="x_lo", values="count", aggfunc="sum").reindex(
        index=ys, columns=xs
    )
    z = np.log10(grid.to_numpy(dtype=float))
    wx = float((df["x_hi"] - df["x_lo"]).iloc[0])
    wy = float((df["y_hi"] - df["y_lo"]).iloc[0])
    fig = go.Figure(
        go.Heatmap(
            x=xs + wx / 2,
            y=ys + wy / 2,
            z=z,
            # log10(count) from 0 (one pair) up; the scale starts at a clearly visible blue, not at
            # Blues' near-white, so single-pair bins show; empty bins (NaN) stay blank.
            colorscale=DENSITY_SCALE,
            zmin=0.0,
            customdata=grid.to_numpy(),
            hovertemplate="x≈%{x:.3g} y≈%{y:.3g}: %{customdata} pairs<extra></extra>",
            colorbar=dict(title="log10 pairs", thickness=12),
        )
    )
    return _xy_layout(fig, df["x_lo"], df["y_lo"], xband, yband, x_label, y_label, title)


def ranks_fig(df: pd.DataFrame, a_label: str, b_label: str, title: str = "") -> go.Figure:
    """Percentile ranks under two runs (rank_a, rank_b, pair_id) with the diagonal of agreement."""
    if df is None or df.empty:
        return _empty(title)
    fig = go.Figure()
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(color="#999", dash="dash"))
    fig.add_scattergl(
        x=df["rank_a"],
        y=df["rank_b"],
        mode="markers",
        customdata=df["pair_id"],
        # The colour is the size of the disagreement, with its scale shown; the scale starts at a
        # visible orange (not Reds' near-white) and every point has an outline.
        marker=dict(
            size=8,
            color=(df["rank_a"] - df["rank_b"]).abs(),
            colorscale=DISAGREE_SCALE,
            cmin=0.0,
            cmax=1.0,
            showscale=True,
            colorbar=dict(title="|rank A − rank B|", thickness=12),
            line=dict(width=0.5, color="#444"),
        ),
        hovertemplate="%{customdata}<br>%{x:.2f} vs %{y:.2f}<extra></extra>",
        name="pairs",
    )
    return fig.update_layout(
        title=title,
        xaxis_title=f"percentile rank · {a_label}",
        yaxis_title=f"percentile rank · {b_label}",
        xaxis_range=[-0.02, 1.02],
        yaxis_range=[-0.02, 1.02],
        height=420,
        **LAYOUT,
    )


def verdict_fig(counts: dict, a_label: str, b_label: str) -> go.Figure:
    """Kept by both / only one / neither model: the verdict flips made visible."""
    names = ["kept by both", f"kept only under {a_label}", f"kept only under {b_label}", "dropped by both"]
    vals = [counts.get(k, 0) for k in ("both", "a_only", "b_only", "neither")]
    fig = go.Figure(
        go.Bar(
            x=vals,
            y=names,
            orientation="h",
            marker_color=[KEPT, "#f9a825", "#6a1b9a", DROPPED],
            text=vals,
            textposition="auto",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return fig.update_layout(title="Verdicts under the two models", height=260, xaxis_title="pairs", **LAYOUT)


def ledger_fig(df: pd.DataFrame, metric: str = "loss") -> go.Figure:
    """Held-out metric per trained model (model, selection, split, metric)."""
    if df is None or df.empty or metric not in df:
        return _empty(f"held-out {metric}", "no evaluated model yet")
    d = df.dropna(subset=[metric])
    labels = [
        f"{m} ({s})" if isinstance(s, str) and s else str(m) for m, s in zip(d["model"], d["selection"])
    ]
    ci = metric == "reward_accuracy" and {"accuracy_lo", "accuracy_hi"} <= set(d)
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=d[metric],
            marker_color=CLEAN,
            text=[f"{v:.4g}" for v in d[metric]],
            textposition="inside" if ci else "auto",
            insidetextanchor="start" if ci else None,  # the value at the bar's foot, clear of its interval
            # a share of n held-out pairs: its 95% Wilson interval (storage.training.ledger)
            error_y=dict(
                type="data",
                symmetric=False,
                array=d["accuracy_hi"] - d[metric],
                arrayminus=d[metric] - d["accuracy_lo"],
                color="#757575",
            )
            if ci
            else None,
        )
    )
    title = f"held-out {metric}" + (" (95% intervals)" if ci else "")
    return fig.update_layout(title=title, height=300, **LAYOUT)


def progress_of(status: dict) -> float | None:
    """done/total of a job status file, clipped to [0, 1]; None when unknown."""
    done, total = status.get("done"), status.get("total")
    if not isinstance(done, int | float) or not isinstance(total, int | float) or not total:
        return None
    return max(0.0, min(1.0, float(done) / float(total)))


# ---------------------------------------------------------------- HTML (escaped) renderers
def word_diff_html(a: str, b: str) -> tuple[str, str]:
    """Word-level diff of two texts as two HTML fragments; every word is html-escaped, only our
    <span> tags are markup. `a` is the chosen response, `b` the rejected one: words only in the
    chosen are marked green (the side DPO pushes up), words only in the rejected red."""
    wa, wb = (a or "").split(" "), (b or "").split(" ")
    sm = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
    left, right = [], []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        ta = html.escape(" ".join(wa[i1:i2]))
        tb = html.escape(" ".join(wb[j1:j2]))
        if op == "equal":
            left.append(ta)
            right.append(tb)
            continue
        if ta:
            left.append(f'<span class="ps-chosen">{ta}</span>')
        if tb:
            right.append(f'<span class="ps-rejected">{tb}</span>')
    return " ".join(left), " ".join(right)


DIFF_CSS = (
    "<style>.ps-box{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:0.86rem;"
    "border:1px solid #ddd;border-radius:6px;padding:10px;max-height:420px;overflow:auto;background:#fafafa}"
    ".ps-chosen{background:#ccf0d0}.ps-rejected{background:#ffd7d5}"
    ".ps-tok{border-radius:3px;padding:0 1px}</style>"
)


def token_html(tokens, logps, ref_logps, scale: float | None = None) -> str:
    """Tokens coloured by log π_policy − log π_ref (green: policy likes it more, red: less).
    Token text is html-escaped; the tooltip holds only numbers."""
    if tokens is None or len(tokens) == 0:
        return ""
    d = np.asarray(logps, dtype=float) - np.asarray(ref_logps, dtype=float)
    s = scale or max(float(np.nanmax(np.abs(d))) if len(d) else 1.0, 1e-9)
    parts = []
    for tok, x in zip(tokens, d):
        a = min(abs(x) / s, 1.0) * 0.6
        rgb = "46,125,50" if x >= 0 else "198,40,40"
        parts.append(
            f'<span class="ps-tok" style="background:rgba({rgb},{a:.3f})" title="{x:+.3f}">'
            f"{html.escape(str(tok))}</span>"
        )
    return "".join(parts)


def boxed(fragment: str) -> str:
    return f'<div class="ps-box">{fragment}</div>'
