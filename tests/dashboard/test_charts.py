"""The pure renderers: figures from DataFrames, escaped HTML from texts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prefsift.dashboard import charts


def test_histogram_fig_bars_and_band():
    df = pd.DataFrame({"bin_lo": [0.0, 1.0, 2.0], "bin_hi": [1.0, 2.0, 3.0], "count": [3, 5, 1]})
    fig = charts.histogram_fig(df, "irm", band=(0.5, 2.5))
    assert list(fig.data[0].y) == [3, 5, 1]
    assert list(fig.data[0].x) == [0.5, 1.5, 2.5]
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == 0.5
    empty = charts.histogram_fig(pd.DataFrame(), "irm")
    assert len(empty.data) == 0 and empty.layout.annotations[0].text == "nothing to show"


def test_kept_dropped_fig_stacks_and_marks_thresholds():
    df = pd.DataFrame({"bin_lo": [0.0, 1.0], "bin_hi": [1.0, 2.0], "kept": [2, 0], "dropped": [1, 4]})
    fig = charts.kept_dropped_fig(df, "t", (0.2, 1.7))
    assert [t.name for t in fig.data] == ["kept", "dropped"]
    assert list(fig.data[1].y) == [1, 4]
    assert fig.layout.barmode == "stack"
    assert sorted(s.x0 for s in fig.layout.shapes) == [0.2, 1.7]


def test_only_the_bands_the_rule_uses_are_drawn():
    """An axis whose score the rule does not use gets no band and no 'dropped by' label (#20 bug 8);
    a region column (the rule's own verdicts) colours the points instead of the rectangle."""
    df = pd.DataFrame(
        {"pair_id": ["a", "b", "c", "d"], "x": [0.5, 5.0, 0.5, 5.0], "y": [0.5, 0.5, 5.0, 5.0],
         "color": [0.0] * 4, "noise": [False] * 4,
         "region": ["kept", "kept", "dropped", "not in the train split"]}
    )  # fmt: skip
    fig = charts.scatter_fig(df, "if", "irm", "region", None, (0, 1))
    texts = {a.text for a in fig.layout.annotations}
    assert "dropped by irm" in texts and not any("if" in t or "both" in t for t in texts)
    assert [sh.type for sh in fig.layout.shapes].count("line") == 2  # the two irm thresholds only
    assert {sh.y0 for sh in fig.layout.shapes if sh.type == "line"} == {0, 1}
    names = {t.name for t in fig.data}
    assert names == {"kept (2)", "dropped (1)", "not in the train split (1)"}
    assert not charts.scatter_fig(df, "if", "ld", "noise", None, None).layout.shapes


def test_scatter_fig_modes_and_region_labels():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(50)],
            "x": rng.normal(size=50),
            "y": rng.normal(size=50),
            "color": rng.random(50),
            "noise": rng.random(50) < 0.2,
        }
    )
    fig = charts.scatter_fig(df, "lossdiff", "irm", "noise", (-1, 1), (-1, 1))
    assert {t.name for t in fig.data} == {"clean", "noisy (label flipped)"}
    assert sum(len(t.x) for t in fig.data) == 50
    texts = {a.text for a in fig.layout.annotations}
    assert {"kept", "dropped by lossdiff", "dropped by irm", "dropped by both"} <= texts
    # the regions are the rule's verdicts (a `region` column, see above); with no rule all are kept
    reg = charts.scatter_fig(df, "lossdiff", "irm", "region")
    assert [t.name for t in reg.data] == ["kept (50)"] and len(reg.data[0].x) == 50
    col = charts.scatter_fig(df, "a", "b", "if")
    assert len(col.data) == 1 and list(col.data[0].customdata) == list(df["pair_id"])
    tif = charts.scatter_fig(df.assign(color=(df["color"] > 0.5).astype(float)), "a", "b", "tif")
    assert [t.name.split(" (")[0] for t in tif.data] == ["tif = 1", "tif = 0"]
    assert sum(len(t.x) for t in tif.data) == 50


def test_density_fig_grid():
    df = pd.DataFrame(
        {
            "x_lo": [0.0, 1.0, 0.0],
            "x_hi": [1.0, 2.0, 1.0],
            "y_lo": [0.0, 0.0, 1.0],
            "y_hi": [1.0, 1.0, 2.0],
            "count": [10, 100, 1],
        }
    )
    fig = charts.density_fig(df, "a", "b")
    z = np.array(fig.data[0].z, dtype=float)
    assert z.shape == (2, 2)
    assert z[0, 1] == 2.0 and z[0, 0] == 1.0 and z[1, 0] == 0.0 and np.isnan(z[1, 1])


def _luminance(colour: str) -> float:
    from plotly.colors import hex_to_rgb, unlabel_rgb

    r, g, b = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_density_single_pair_bins_are_visible():
    """A bin holding one pair gets a colour clearly darker than the white page (#20 bug 10);
    empty bins stay blank (NaN)."""
    from plotly.colors import sample_colorscale

    df = pd.DataFrame(
        {"x_lo": [0.0, 1.0, 0.0], "x_hi": [1.0, 2.0, 1.0], "y_lo": [0.0, 0.0, 1.0], "y_hi": [1.0, 1.0, 2.0],
         "count": [1, 1000, 1]}
    )  # fmt: skip
    h = charts.density_fig(df, "a", "b").data[0]
    z = np.array(h.z, dtype=float)
    lo = h.zmin if h.zmin is not None else np.nanmin(z)
    hi = h.zmax if h.zmax is not None else np.nanmax(z)
    scale = [[float(s), c] for s, c in h.colorscale]
    single = sample_colorscale(scale, [(z[0, 0] - lo) / (hi - lo)])[0]
    assert _luminance(single) < 0.85, single  # white is 1.0; Blues' first colour is 0.98
    assert np.isnan(z[1, 1])


def test_word_diff_html_escapes_and_marks():
    a = 'keep <script>alert("x")</script> this'
    b = "keep <img src=x onerror=alert(1)> this"
    left, right = charts.word_diff_html(a, b)
    for frag in (left, right):
        assert "<script" not in frag and "<img" not in frag
    assert "&lt;script&gt;" in left and "&lt;img" in right
    assert left.startswith("keep ") and left.endswith(" this")
    # chosen's own words green, rejected's own words red (chosen is the side DPO keeps)
    assert '<span class="ps-chosen">' in left and '<span class="ps-rejected">' in right
    css = charts.DIFF_CSS
    assert "ps-chosen{background:#ccf0d0}" in css and "ps-rejected{background:#ffd7d5}" in css
    same_l, same_r = charts.word_diff_html("a b c", "a b c")
    assert same_l == same_r == "a b c"


def test_token_html_colours_and_escapes():
    out = charts.token_html(["<b>", "ok"], [-1.0, -0.5], [-0.5, -1.0])
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert "198,40,40" in out and "46,125,50" in out  # first token: policy lower (red), second higher (green)
    assert 'title="-0.500"' in out and 'title="+0.500"' in out
    assert charts.token_html([], [], []) == ""


def test_progress_and_ledger_and_verdicts():
    assert charts.progress_of({"done": 5, "total": 10}) == 0.5
    assert charts.progress_of({"done": 50, "total": 10}) == 1.0
    assert charts.progress_of({"done": 5}) is None
    led = pd.DataFrame({"model": ["ref", "trained-a"], "selection": [None, "a"], "loss": [0.69, 0.5]})
    fig = charts.ledger_fig(led, "loss")
    assert list(fig.data[0].x) == ["ref", "trained-a (a)"]
    assert len(charts.ledger_fig(pd.DataFrame(), "loss").data) == 0
    led = led.assign(reward_accuracy=[0.0, 0.75], accuracy_lo=[0.0, 0.6], accuracy_hi=[0.1, 0.85])
    bars = charts.ledger_fig(led, "reward_accuracy").data[0]
    assert list(bars.error_y.array) == pytest.approx([0.1, 0.1]) and list(
        bars.error_y.arrayminus
    ) == pytest.approx([0.0, 0.15])
    assert charts.ledger_fig(led, "loss").data[0].error_y.array is None  # no interval for a mean loss
    v = charts.verdict_fig({"both": 5, "a_only": 2, "b_only": 1, "neither": 3}, "A", "B")
    assert list(v.data[0].x) == [5, 2, 1, 3]


def test_ranks_fig_has_a_colour_legend_and_no_invisible_points():
    """Disagreements' colour is explained by a colour bar, and a small disagreement is still a
    visible point (#20 UX)."""
    from plotly.colors import sample_colorscale

    df = pd.DataFrame({"pair_id": ["a", "b"], "rank_a": [0.5, 0.0], "rank_b": [0.49, 1.0]})
    m = charts.ranks_fig(df, "irm", "lossdiff").data[0].marker
    assert m.showscale and "rank A" in m.colorbar.title.text
    palest = sample_colorscale([[float(s), c] for s, c in m.colorscale], [0.0])[0]
    assert _luminance(palest) < 0.85, palest
