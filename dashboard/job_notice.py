"""A background job's state shown where the person started it (not only under Overview → Jobs).

While the job runs, a fragment polls its status every two seconds and shows its progress; when
it ends, the whole page reruns to show the result, or the job's error and the end of its log.
`show` follows one job (e.g. one pair's), `follow` a kind's running jobs and the one this session
started; `progress` is every page's job progress bar.
"""

from __future__ import annotations

import streamlit as st

from prefsift.dashboard import charts, data


def show(kind: str, *argv_has: str, what: str = "The job") -> None:
    """The newest `kind` job whose arguments include all of `argv_has` (e.g. one pair's id).

    The page reruns when that job has ended since the page was drawn: `drawn` is read once per
    full run (the fragment keeps it in its closure), so no poll has to catch the job while it runs
    and a rerun that got lost is asked for again on the next poll."""
    job = data.latest_job(kind, *argv_has)
    drawn = job["job_id"] if job and job["status"] not in ("queued", "running") else None

    @st.fragment(run_every=2.0)
    def _poll() -> None:
        job = data.latest_job(kind, *argv_has)
        if not job:
            return
        status, jid = job["status"], job["job_id"]
        if status in ("queued", "running"):
            prog = charts.progress_of(data.job_status(job.get("status_path")))
            st.info(f"{what} is running (job `{jid}`); this page updates when it ends.", icon="⏳")
            if prog is not None:
                st.progress(prog)
            return
        if jid != drawn:
            st.rerun(scope="app")  # it ended after the page was drawn: show its result on the whole page
        if status in ("failed", "killed", "died"):
            st.error(f"{what} failed (job `{jid}`, {status}): {job.get('error') or 'no error recorded'}")
            tail = data.log_tail(job.get("log_path"))
            if tail:
                with st.expander("end of the job's log"):
                    st.code(tail, language=None)

    _poll()


def progress(status: dict, label: str, tail: str = "") -> None:
    """A job's progress bar from its status file: `label done/total` (0 while the total is unknown)."""
    frac = charts.progress_of(status)
    st.progress(
        frac if frac is not None else 0.0,
        text=f"{label} {status.get('done', '')}/{status.get('total') or '?'}{tail}",
    )


def follow(kind: str, title: str, key: str, done: str) -> None:
    """The `kind` jobs running now, and the one this session started (`st.session_state[key]`):
    each one's progress, the end of its log, and how it ended (`done` when it succeeded). When
    that job ends, the whole page reruns once: its results are outside this fragment."""

    @st.fragment(run_every="2s")
    def _panel() -> None:
        jobs = data.cached("jobs", default=None)
        if jobs is None or jobs.empty:
            return
        of_kind = jobs[jobs["kind"] == kind]
        mine = st.session_state.get(key)
        active = of_kind[of_kind["status"].isin(["queued", "running"]) | (of_kind["job_id"] == mine)]
        if active.empty:
            return
        st.subheader(title)
        for job in active.head(3).itertuples():
            stat = data.job_status(job.status_path)
            progress(stat, f"{job.job_id} — {job.status} · {stat.get('stage', '')}")
            st.code(data.log_tail(job.log_path) or "(no output yet)", language=None)
            if job.status in ("failed", "killed", "died"):
                st.error(f"{job.job_id} {job.status}: {job.error if isinstance(job.error, str) else ''}")
            elif job.status == "done":
                st.success(f"{job.job_id} finished: {done}")
        ended = of_kind[(of_kind["job_id"] == mine) & ~of_kind["status"].isin(["queued", "running"])]
        if not ended.empty and st.session_state.get(f"{key}_ended") != mine:
            st.session_state[f"{key}_ended"] = mine
            st.rerun(scope="app")

    _panel()
