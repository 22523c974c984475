"""Overview: where the main job is, what the scores mean, what the database holds, and the jobs
running now."""

from __future__ import annotations

import streamlit as st

from prefsift.dashboard import data, job_notice

st.title("Overview")

_MARK = {
    "done": ":material/check_circle:",
    "running": ":material/progress_activity:",
    "failed": ":material/error:",
    "pending": ":material/radio_button_unchecked:",
}


@st.fragment(run_every="2s")
def pipeline_panel() -> None:
    """The newest pipeline job (`prefsift demo` runs its stages as one background job): its
    stages, the running stage's progress, and a page refresh each time a stage lands."""
    jobs = data.cached("jobs", limit=20)
    if jobs is None or jobs.empty:
        return
    demo = jobs[jobs["kind"] == "demo"]
    if demo.empty:
        return
    job = demo.iloc[0]
    s = data.job_status(job["status_path"])
    stages = s.get("pipeline") or []
    n_done = sum(r.get("state") == "done" for r in stages)
    running = job["status"] in ("queued", "running")
    total_s = sum(r["seconds"] for r in stages if isinstance(r.get("seconds"), int | float))
    if running:
        box = st.container(border=True)
        box.subheader("The demo pipeline is running in the background")
        box.caption(
            f"Stage {min(n_done + 1, len(stages))} of {len(stages)}; the pages fill as its stages land. "
            f"Job `{job['job_id']}`, log `{job['log_path']}`."
        )
    else:
        state = {"done": "finished", "failed": "FAILED"}.get(job["status"], job["status"])
        box = st.expander(f"The demo pipeline {state}: {n_done} of {len(stages)} stages, {total_s:.0f} s")
    with box:
        for r in stages:
            secs = f" · {r['seconds']:.0f} s" if isinstance(r.get("seconds"), int | float) else ""
            if isinstance(r.get("peak_rss_gib"), int | float):
                secs += f" · peak memory {r['peak_rss_gib']:.1f} GiB"
            st.markdown(f"{_MARK.get(r.get('state'), _MARK['pending'])} {r['title']}{secs}")
        if running and s.get("stage"):
            job_notice.progress(s, s.get("stage"))
    if job["status"] in ("failed", "killed", "died"):
        st.error(
            f"The demo pipeline stopped: {job['error']}. Its log: `{job['log_path']}`; rerun `prefsift demo` to resume."
        )
    seen = st.session_state.get("overview_pipeline_seen")
    st.session_state["overview_pipeline_seen"] = (n_done, job["status"])
    if seen is not None and seen != (n_done, job["status"]):
        st.rerun(scope="app")  # a stage landed: the pages below have new data


pipeline_panel()
dataset = data.require_dataset()
runs = data.runs_table(dataset)
ds = data.datasets()
row = ds[ds["name"] == dataset].iloc[0]
bundle = data.cached("overview", dataset, default=None)
if bundle is None:
    st.stop()  # busy: the notice is shown
sel, trained, models = bundle["selections"], bundle["training_runs"], bundle["models"]

roles = data.cached("model_roles", dataset, default={}) or {}


def _name(role: str) -> str | None:
    m = roles.get(role)
    return m["name"] if m else None


steps = [
    ("θ, the warmed-up policy", _name("policy"), f"prefsift warmup --dataset {dataset} --model REF"),
    ("θ_val, the validation model", _name("validation"), f"prefsift fit-val --dataset {dataset}"),
    (
        "IRM and LossDiff",
        "scored" if (runs["metric"] == "lossdiff").any() else None,
        f"prefsift score --dataset {dataset}",
    ),
    (
        "IF and TIF",
        "computed" if (runs["metric"] == "if").any() else None,
        f"prefsift influence --dataset {dataset}",
    ),
    ("a saved selection", f"{len(sel)} saved" if sel is not None and len(sel) else None, "Tune & select"),
    (
        "a model trained on it",
        f"{len(roles.get('trained') or [])} trained" if roles.get("trained") else None,
        "Export & train",
    ),
]
with st.container(border=True):
    st.markdown(
        "**What the scores mean.** For each pair: **IRM** is θ's implicit reward margin (how strongly θ "
        "already prefers chosen over rejected, in the DPO reward β·log π/π_ref); **LossDiff** is how much "
        "the pair's DPO loss drops when θ moves toward the validation set (θ → θ_val); **IF** is the exact "
        "influence of the pair on the validation loss, **TIF** its middle band. The paper finds the pairs "
        "in the *middle* bands help most; the LossDiff-IRM rule keeps the intersection of the two middle bands."
    )
    todo = [s for s in steps if not s[1]]
    st.markdown(
        "**Where you are:** "
        + " → ".join(
            f"{_MARK['done'] if have else _MARK['pending']} {what}" + (f" ({have})" if have else "")
            for what, have, _ in steps
        )
    )
    if todo:
        what, _, how = todo[0]
        st.markdown(f"**Next:** {what}: " + (f"`{how}`" if how.startswith("prefsift") else f"open **{how}**"))
    else:
        st.markdown(
            "**Next:** compare the trained models in the ledger (**Export & train**) and the scores of θ and θ_val (**Compare models**)."
        )

c = st.columns(5)
c[0].metric("Pairs", f"{int(row['pairs']):,}")
c[1].metric("Train / val", f"{int(row['train']):,} / {int(row['val']):,}")
c[2].metric("Score runs", len(runs))
c[3].metric("Selections", len(sel))
c[4].metric("Training runs", len(trained))

st.subheader("Datasets")
data.show_table(ds)

left, right = st.columns(2)
with left:
    st.subheader("Models")
    data.show_table(
        models, "No model registered yet: `prefsift warmup` registers θ, `prefsift fit-val` θ_val."
    )
with right:
    st.subheader("Score runs")
    if runs.empty:
        st.caption(f"No scores yet for **{dataset}**: start a scoring job below.")
    else:
        view = runs[["metric", "policy", "n_pairs", "created_at", "run_id"]].copy()
        view["coverage"] = view["n_pairs"] / max(int(row["pairs"]), 1)
        data.show_table(
            view,
            column_config={"coverage": st.column_config.ProgressColumn("coverage", format="percent")},
        )

if not runs.empty:
    with st.expander("Coverage: which pairs have which scores (latest run of each metric)"):
        latest = bundle["latest_runs"] or {}
        if st.toggle("Compute coverage", key="overview_coverage"):
            snap = data.snapshot(dataset, list(latest.values()))
            if snap is not None:
                data.show_table(data.sq(dataset, "presence", latest))

left, right = st.columns(2)
with left:
    st.subheader("Selections")
    data.show_table(sel, "None saved yet: tune bands on **Tune & select** and save one.")
    exports = bundle["exports"]
    if exports is not None and not exports.empty:
        st.caption("Exports")
        data.show_table(exports)
with right:
    st.subheader("Training runs")
    data.show_table(trained, "None yet: export a selection and train on **Export & train**.")


@st.fragment(run_every="2s")
def jobs_panel() -> None:
    st.subheader("Jobs")
    jobs = data.cached("jobs", limit=20)  # re-read only when the database changes
    if jobs is None or jobs.empty:
        st.caption("No background job has run on this database yet.")
        return
    running = jobs[jobs["status"].isin(["queued", "running"])]
    for job in running.itertuples():
        s = data.job_status(job.status_path)
        eta = f" · ETA {s['eta_s']:.0f}s" if isinstance(s.get("eta_s"), int | float) else ""
        job_notice.progress(s, f"{job.job_id} — {s.get('stage', job.status)}", eta)
    data.show_table(jobs[["job_id", "kind", "status", "created_at", "finished_at", "error"]])


jobs_panel()

with st.expander("Start a scoring job"):
    st.caption("Runs `prefsift score` in the background; progress appears under Jobs above.")
    names = models["name"].dropna().tolist() if models is not None and not models.empty else []

    def _index(options: list[str], role: str, fallback: int = 0) -> int:
        n = _name(role)
        return options.index(n) if n in options else fallback

    if not names:
        st.caption(f"No model registered yet: `prefsift warmup --dataset {dataset} --model REF` makes θ.")
    with st.form("overview_score_form"):
        policy = st.selectbox("Policy θ", names, index=_index(names, "policy"), key="overview_policy")
        ref = st.selectbox("Reference π_ref", names, index=_index(names, "reference"), key="overview_ref")
        vals = ["(none)"] + names
        val = st.selectbox(
            "Validation model θ_val (for LossDiff)",
            vals,
            index=_index(vals, "validation"),
            key="overview_val",
        )
        go = st.form_submit_button("Start scoring", type="primary", disabled=not names)
    if go:
        argv = ["score", "--dataset", dataset, "--policy", policy, "--ref", ref]
        if val != "(none)":
            argv += ["--val", val]
        try:
            job = data.start_job(argv)
            st.success(f"Started job `{job['job_id']}`.")
        except (RuntimeError, ValueError, OSError) as exc:
            st.error(f"Could not start the job: {exc}")
