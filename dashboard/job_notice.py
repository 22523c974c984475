"""A background job's state shown where the person started it (not only under Overview → Jobs).

While the job runs, a fragment polls its status every two seconds and shows its progress; when
it ends, the whole page reruns to show the result, or the job's error and the end of its log.
"""

from __future__ import annotations

import streamlit as st

from prefsift.dashboard import charts, data


def show(kind: str, *argv_has: str, what: str = "The job") -> None:
    """The newest `kind` job whose arguments include all of `argv_has` (e.g. one pair's id)."""

    @st.fragment(run_every=2.0)
    def _poll() -> None:
        job = data.latest_job(kind, *argv_has)
        if not job:
            return
        status, jid = job["status"], job["job_id"]
        if status in ("queued", "running"):
            st.session_state[f"job_notice_live_{jid}"] = True
            prog = charts.progress_of(data.job_status(job.get("status_path")))
            st.info(f"{what} is running (job `{jid}`); this page updates when it ends.", icon="⏳")
            if prog is not None:
                st.progress(prog)
            return
        if st.session_state.pop(f"job_notice_live_{jid}", False):
            st.rerun(scope="app")  # it just ended: show its result on the whole page
        if status in ("failed", "killed", "died"):
            st.error(f"{what} failed (job `{jid}`, {status}): {job.get('error') or 'no error recorded'}")
            tail = data.log_tail(job.get("log_path"))
            if tail:
                with st.expander("end of the job's log"):
                    st.code(tail, language=None)

    _poll()
