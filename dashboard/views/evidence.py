"""Evidence: does a selection help this model, and do its diagnostics beat chance?

1. `prefsift experiment` results of the dataset (stored as diagnostics `experiment:<name>`): each
   arm's held-out reward accuracy and loss with 95% intervals, the paired differences to a
   same-size random subset and to the full split, a plain-words reading, how compute was matched
   and over how many seeds; a button that starts the experiment as a background job.
2. A saved selection against TIF: its overlap beside a same-size random selection's chance level
   and null range (storage.diagnose), and the correlations, band overlaps and noisy-pair AUROC
   with intervals that `prefsift diagnose --json` computes (the application's maths, run as a
   short subprocess: the dashboard imports storage only).
"""

from __future__ import annotations

import shlex

import pandas as pd
import streamlit as st

from prefsift.dashboard import data, job_notice
from prefsift.dashboard import evidence_charts as ec

ARMS = ("selection", "full", "random", "if-low", "if-mid", "if-high")

st.title("Evidence")
dataset = data.require_dataset()
db = data.db_path()
selections = data.cached("selections", dataset, default=None)
if selections is None:
    st.stop()  # busy: the notice is on the page
roles = data.cached("model_roles", dataset, default={}) or {}
policy = roles.get("policy")
latest = data.cached("latest_runs", dataset, default={}) or {}
experiments = data.cached("experiments", dataset, default=[]) or []

# The experiments' own arm selections (xp-…) go after the person's selections.
xp_names = {n for s in experiments for n in selections["name"] if str(n).startswith(s["experiment"] + "-")}
names = sorted(selections["name"], key=lambda n: n in xp_names)  # stable: each group keeps its order


def experiment_argv(selection: str, seeds: int = 3, arms=ARMS, compute: str = "steps", epochs: float = 2.0):
    argv = ["experiment", "--selection", selection]
    if policy:
        argv += ["--policy", str(policy["name"] or policy["model_id"])]
    if seeds != 3:
        argv += ["--seeds", *(str(s) for s in range(seeds))]
    if tuple(arms) != ARMS:
        argv += ["--arms", *arms]
    if compute != "steps":
        argv += ["--compute", compute]
    if epochs != 2.0:
        argv += ["--epochs", f"{epochs:g}"]
    return argv


def command(argv: list[str]) -> str:
    return "prefsift " + shlex.join([*argv, "--db", str(db)])


# ---------------------------------------------------------------- 1. the experiment
st.header("Does the selection help your model?")
st.caption(
    "From θ, `prefsift experiment` trains the selection, the full split, same-size random subsets and "
    "the IF thirds with matched compute over several seeds, and judges each on the held-out pairs."
)
if experiments:
    by_name = {s["experiment"]: s for s in experiments}
    pick = st.selectbox("experiment", list(by_name), index=len(by_name) - 1, key="evidence_experiment")
    s = by_name[pick]
    cfg = s.get("config", {})
    seeds = cfg.get("seeds") or []
    if s.get("max_steps"):
        compute = (
            f"every arm took the same **{s['max_steps']} optimizer steps** of {s['batch']} pairs "
            f"({cfg.get('epochs', 0):g} epoch(s) of the selection)"
        )
    else:
        compute = (
            f"every arm took **{cfg.get('epochs', 0):g} epoch(s)** over its own pairs (arms of different "
            "sizes took different numbers of steps)"
        )
    st.markdown(
        f"Selection **{s['config']['selection']}**: {s['n_selected']:,} of {s['n_total']:,} pairs of the "
        f"{s['split']} split, trained from `{cfg.get('policy')}`; judged on **{s['n_eval']:,} held-out "
        f"{cfg.get('eval_split', 'eval')} pairs**. Compute matched by "
        f"{'steps' if s.get('max_steps') else 'epochs'}: {compute}. "
        f"**{len(seeds)} seed{'s' if len(seeds) != 1 else ''}** ({', '.join(map(str, seeds))}); each seed "
        "redraws the random subset and the training order. Intervals: 95%, bootstrap over eval pairs "
        f"and seeds ({cfg.get('n_boot', '?')} resamples, paired across arms)."
    )
    if s.get("skipped"):
        st.caption(s["skipped"])
    st.caption("Arm sizes: " + ", ".join(f"{a} {n:,}" for a, n in s.get("sizes", {}).items()))
    metrics = s.get("metrics", {})
    readings = [
        ec.reading(d, metric, s["n_total"])
        for metric in ("reward_accuracy", "loss")
        for d in metrics.get(metric, {}).get("diffs", [])
        if d["arm"] == "selection"
    ]
    for line in readings:
        st.markdown(f"- {line}")
    if len(seeds) < 3 or s["n_eval"] < 100:
        st.caption(
            f"With {len(seeds)} seed(s) and {s['n_eval']} eval pairs the intervals are wide: an "
            "interval covering 0 means this run cannot tell the arms apart, not that they are equal."
        )
    for metric in ("reward_accuracy", "loss"):
        if metric not in metrics:
            continue
        arms_df, diffs_df = ec.arms_frame(metrics[metric]), ec.diffs_frame(metrics[metric])
        c = st.columns([3, 2])
        c[0].plotly_chart(ec.arms_fig(arms_df, metric), key=f"evidence_arms_{metric}")
        c[1].plotly_chart(ec.diffs_fig(diffs_df, metric), key=f"evidence_diffs_{metric}")
        with st.expander(f"{ec.METRICS[metric][0]}: the numbers"):
            data.show_table(arms_df.drop(columns="arm"))
            data.show_table(diffs_df.drop(columns=["arm", "vs"]))
    tif_lines = [
        ec.reading(d, "reward_accuracy")
        for d in metrics.get("reward_accuracy", {}).get("diffs", [])
        if d["arm"].startswith("if-") and d["vs"] == "random"
    ]
    if tif_lines:
        st.markdown("**The TIF claim** (middle-influence pairs beat small and large ones):")
        for line in tif_lines:
            st.markdown(f"- {line}")
else:
    default_sel = next(iter(names), None)
    if default_sel is None:
        st.info(
            "No selection saved for this dataset yet. Save one on **Tune & select** (or "
            f"`prefsift select --dataset {dataset} --name NAME`), then test it here with\n\n"
            f"```\nprefsift experiment --selection NAME --db {db}\n```"
        )
    else:
        st.info(
            "No experiment has been run on this dataset yet. Test whether a selection beats a same-size "
            "random subset and the full split, with intervals, by training each from θ:\n\n"
            f"```\n{command(experiment_argv(default_sel))}\n```\n"
            "or start it below (it trains 6 arms × 3 seeds: minutes on a GPU, longer on a CPU)."
        )

if names:
    with st.expander("Run an experiment", expanded=not experiments):
        fc = st.columns([3, 1, 2, 1])
        sel = fc[0].selectbox("selection under test", names, key="evidence_run_selection")
        n_seeds = int(fc[1].number_input("seeds", 1, 10, 3, key="evidence_run_seeds"))
        compute = fc[2].radio(
            "match compute by",
            ["steps", "epochs"],
            horizontal=True,
            key="evidence_run_compute",
            help="steps: every arm takes the selection arm's optimizer steps; epochs: every arm takes "
            "the same number of passes over its own pairs",
        )
        epochs = float(fc[3].number_input("epochs", 0.5, 10.0, 2.0, 0.5, key="evidence_run_epochs"))
        available = [a for a in ARMS if not a.startswith("if-") or "if" in latest]
        arms = st.multiselect("arms", available, default=available, key="evidence_run_arms")
        if "if" not in latest:
            st.caption("The IF thirds need IF scores: run `prefsift influence` first.")
        if "selection" not in arms:
            arms = ["selection", *arms]
        argv = experiment_argv(sel, n_seeds, tuple(a for a in ARMS if a in arms), compute, epochs)
        st.code(command(argv), language="bash")
        if st.button("Run in the background", type="primary", key="evidence_run", disabled=policy is None):
            try:
                job = data.start_job(argv)
                st.session_state["evidence_job"] = job["job_id"]
                st.success(f"Started experiment job `{job['job_id']}`.")
            except (RuntimeError, ValueError, OSError) as exc:
                st.error(f"Could not start the experiment: {exc}")
        if policy is None:
            st.caption(f"No warmed-up θ yet: run `prefsift warmup --dataset {dataset}` (or the demo) first.")


job_notice.follow("experiment", "Experiment jobs", "evidence_job", "its arms are shown above.")


# ---------------------------------------------------------------- 2. a selection against TIF
def _f(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else format(x, fmt)


st.header("Does the selection agree with TIF beyond chance?")
if not names:
    st.caption("Its overlap with TIF, correlations and AUROC appear here once a selection is saved.")
    st.stop()
default = experiments[-1]["config"]["selection"] if experiments else names[0]
sel = st.selectbox(
    "selection", names, index=names.index(default) if default in names else 0, key="evidence_selection"
)
d = data.cached("diagnose", sel, default=None)
if d is None:
    st.stop()
tif = d.get("tif")
if not tif:
    st.info(
        f"No IF scores for **{dataset}**: the TIF comparison needs them. Run\n\n"
        f"```\nprefsift influence --dataset {dataset} --db {db}\n```"
    )
else:
    inside = tif["null_lo"] <= tif["overlap"] <= tif["null_hi"]
    m = st.columns(5)
    m[0].metric("overlap with TIF", _f(tif["overlap"]))
    m[1].metric("random, same size", _f(tif["chance"]), help="expected overlap of a random selection")
    m[2].metric("random: 95% range", f"{_f(tif['null_lo'])}–{_f(tif['null_hi'])}")
    m[3].metric("lift · κ", f"{_f(tif['lift'], '.2f')} · {_f(tif['kappa'], '.2f')}")
    m[4].metric("Fisher's p", _f(tif["p_value"], ".3g"))
    where = "inside" if inside else "above" if tif["overlap"] > tif["null_hi"] else "below"
    verdict = f"{where} the range a random selection of the same size reaches" + (
        ": no sign of agreement beyond chance" if inside else ""
    )
    st.markdown(
        f"The selection keeps {tif['n_a']:,} pairs; TIF (`{tif['rule']}`) flags {tif['n_b']:,} of "
        f"{tif['n_scored']:,} pairs with IF; they share {tif['n_both']:,}. Overlap {_f(tif['overlap'])} is "
        f"{verdict}."
    )
noise = d.get("noise")
if noise:
    st.caption(
        f"Flagged noisy pairs: the selection drops {_f(noise['noisy_dropped_share'], '.1%')} of the "
        f"{noise['n_noisy']} noisy and {_f(noise['clean_dropped_share'], '.1%')} of the {noise['n_clean']} "
        f"clean ones (a random drop: {_f(noise['chance_dropped_share'], '.1%')} of each; Fisher's p "
        f"{_f(noise['p_value'], '.3g')})."
    )

st.subheader("Correlations and AUROC with 95% intervals")
n_boot = int(st.select_slider("bootstrap resamples", [200, 500, 1000, 2000], value=1000, key="evidence_boot"))
try:
    with st.spinner("`prefsift diagnose` is computing the intervals…"):
        # The answer depends on the selection, the dataset's score runs and θ's evaluation, not on
        # every commit of a running job (training steps): key the cache by those.
        inputs = (
            str(selections.loc[selections["name"] == sel, "created_at"].iloc[0]),
            tuple(sorted(latest.items())),
            len(ledger) if (ledger := data.cached("ledger", dataset, default=None)) is not None else 0,
        )
        out = data.cli_json(["diagnose", "--selection", sel, "--bootstrap", str(n_boot)], inputs)
    ev = out.get("evidence") or {}
except (RuntimeError, ValueError, OSError) as exc:
    ev = None
    st.warning(f"Could not compute the intervals (`prefsift diagnose --selection {sel}`): {exc}")
if ev:
    pe = ev.get("policy_eval")
    if pe:
        st.caption(
            f"θ on {pe['split']} ({pe['n_pairs']} pairs): mean margin {_f(pe['mean_margin'], '.4f')}, "
            f"reward accuracy {_f(pe['reward_accuracy'])}, loss {_f(pe['loss'], '.4f')} (ln 2 = 0.6931). "
            "A θ that barely moved makes every score near-noise."
        )
    st.caption(
        f"{ev['n_pairs']:,} pairs ({ev['n_with_if']:,} with IF); {int(100 * ev['level'])}% intervals from "
        f"{ev['n_boot']} bootstrap resamples (seed {ev['seed']}). A number whose interval covers its chance "
        "level shows nothing."
    )
    bands = pd.DataFrame(ev.get("bands") or [])
    corr = pd.DataFrame(ev.get("correlations") or [])
    c = st.columns(2)
    c[0].plotly_chart(ec.overlap_fig(bands), key="evidence_overlap")
    c[1].plotly_chart(ec.correlation_fig(corr), key="evidence_corr")
    if not bands.empty:
        with st.expander("overlap with TIF at each band: the numbers"):
            cols = ["band", "rule", "overlap", "chance", "null_lo", "null_hi", "lift", "kappa", "p_value"]
            data.show_table(bands[[c for c in cols if c in bands]])
    if not corr.empty:
        cols = ["score", "subset", "n", "pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo"]
        cols += ["spearman_hi", "partial_pearson", "partial_pearson_lo", "partial_pearson_hi", "chance_abs_r"]
        data.show_table(corr[[c for c in cols if c in corr]])
    auroc = pd.DataFrame(ev.get("noise_auroc") or [])
    if not auroc.empty:
        st.markdown("**Noisy-pair detection**: AUROC of a low score for the flagged pairs (0.5 = chance)")
        data.show_table(auroc[["score", "auroc", "auroc_lo", "auroc_hi", "n_positive", "n_negative"]])
    length = pd.DataFrame(ev.get("length") or [])
    if not length.empty:
        with st.expander("length confound: each score's Spearman with token counts"):
            data.show_table(length[["score", "length", "spearman", "spearman_lo", "spearman_hi"]])
elif ev is not None:
    st.caption("`prefsift diagnose` returned no evidence for this selection.")
