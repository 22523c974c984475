"""Overview: what the database holds, which pairs have which scores, and the jobs running now."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data

st.title("Overview")
dataset = data.require_dataset()
runs = data.runs_table(dataset)
ds = data.datasets()
row = ds[ds["name"] == dataset].iloc[0]
bundle = data.cached("overview", dataset, default=None)
if bundle is None:
    st.stop()  # busy: the notice is shown
sel, trained, models = bundle["selections"], bundle["training_runs"], bundle["models"]

c = st.columns(5)
c[0].metric("Pairs", f"{int(row['pairs']):,}")
c[1].metric("Train / val", f"{int(row['train']):,} / {int(row['val']):,}")
c[2].metric("Score runs", len(runs))
c[3].metric("Selections", len(sel))
c[4].metric("Training runs", len(trained))

st.subheader("Datasets")
st.dataframe(ds, hide_index=True, width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("Models")
    if models is None or models.empty:
        st.caption("No model registered yet: `prefsift warmup` registers θ, `prefsift fit-val` θ_val.")
    else:
        st.dataframe(models, hide_index=True, width="stretch")
with right:
    st.subheader("Score runs")
    if runs.empty:
        st.caption(f"No scores yet for **{dataset}**: start a scoring job below.")
    else:
        view = runs[["metric", "policy", "n_pairs", "created_at", "run_id"]].copy()
        view["coverage"] = view["n_pairs"] / max(int(row["pairs"]), 1)
        st.dataframe(
            view,
            hide_index=True,
            width="stretch",
            column_config={"coverage": st.column_config.ProgressColumn("coverage", format="percent")},
        )

if not runs.empty:
    with st.expander("Coverage: which pairs have which scores (latest run of each metric)"):
        latest = bundle["latest_runs"] or {}
        if st.toggle("Compute coverage", key="overview_coverage"):
            snap = data.snapshot(dataset, list(latest.values()))
            if snap is not None:
                st.dataframe(data.sq(dataset, "presence", latest), hide_index=True, width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("Selections")
    if sel is None or sel.empty:
        st.caption("None saved yet: tune bands on **Tune & select** and save one.")
    else:
        st.dataframe(sel, hide_index=True, width="stretch")
    exports = bundle["exports"]
    if exports is not None and not exports.empty:
        st.caption("Exports")
        st.dataframe(exports, hide_index=True, width="stretch")
with right:
    st.subheader("Training runs")
    if trained is None or trained.empty:
        st.caption("None yet: export a selection and train on **Export & train**.")
    else:
        st.dataframe(trained, hide_index=True, width="stretch")


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
        frac = charts.progress_of(s)
        eta = f" · ETA {s['eta_s']:.0f}s" if isinstance(s.get("eta_s"), int | float) else ""
        label = (
            f"{job.job_id} — {s.get('stage', job.status)} {s.get('done', '')}/{s.get('total') or '?'}{eta}"
        )
        st.progress(frac if frac is not None else 0.0, text=label)
    st.dataframe(
        jobs[["job_id", "kind", "status", "created_at", "finished_at", "error"]],
        hide_index=True,
        width="stretch",
    )


jobs_panel()

with st.expander("Start a scoring job"):
    st.caption("Runs `prefsift score` in the background; progress appears under Jobs above.")
    names = [n for n in (models["name"].dropna().tolist() if models is not None and not models.empty else [])]
    with st.form("overview_score_form"):
        policy = st.selectbox("Policy θ", names or ["theta"], key="overview_policy")
        ref = st.selectbox("Reference π_ref", names or ["ref"], key="overview_ref")
        val = st.selectbox("Validation model θ_val (for LossDiff)", ["(none)"] + names, key="overview_val")
        go = st.form_submit_button("Start scoring", type="primary")
    if go:
        argv = ["score", "--dataset", dataset, "--policy", policy, "--ref", ref]
        if val != "(none)":
            argv += ["--val", val]
        try:
            job = data.start_job(argv)
            st.success(f"Started job `{job['job_id']}`.")
        except (RuntimeError, ValueError, OSError) as exc:
            st.error(f"Could not start the job: {exc}")
