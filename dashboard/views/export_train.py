"""Export & train: one click writes a selection's TRL-ready file (always under the database's
exports folder) and starts `prefsift train --selection NAME` in the background; the ledger
puts each trained model's held-out metrics next to the others'."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from prefsift.dashboard import charts, data, identity, job_notice

st.title("Export & train")
dataset = data.require_dataset()
selections = data.cached("selections", dataset, default=pd.DataFrame())
if selections is None or selections.empty:
    st.info(
        "No selection saved for this dataset yet: tune the bands on **Tune & select** and save one, "
        f"or run `prefsift select --dataset {dataset} --name NAME`."
    )
    st.stop()

me = identity.current()
if me is not None and not me.is_curator:
    st.info(f"Exports and training are for curators: you ({me.name}) can look, not export or train.")
names = list(selections["name"])


def _default() -> int:
    """The selection this session saved on Tune, else the newest that is not a baseline (a random
    draw, or one band of IF: what `prefsift demo` saves to compare LossDiff-IRM with), else the newest."""
    last = st.session_state.get("tune_saved")
    if last in names:
        return names.index(last)
    chosen = [i for i, r in enumerate(selections["rule"]) if not re.fullmatch(r"random:.*|if:[^&]*", r)]
    return chosen[-1] if chosen else len(names) - 1


c = st.columns([3, 2, 2])
name = c[0].selectbox("selection", names, index=_default(), key="export_selection")
fmt = c[1].radio("format", ["parquet", "jsonl"], horizontal=True, key="export_format")
roles = data.cached("model_roles", dataset, default={}) or {}
policy = roles.get("policy")
starts = {"theta": f"θ ({policy['name']})" if policy else "θ (none yet)", "ref": "π_ref"}
start = c[2].radio(
    "train from",
    list(starts),
    format_func=starts.get,
    horizontal=True,
    key="export_from",
    help="continue from the warmed-up policy θ (the paper) or from the reference π_ref it was trained against",
)
row = selections[selections["name"] == name].iloc[0]
st.caption(
    f"Rule `{row['rule']}` · {int(row['n_kept']):,} of {int(row['n_total']):,} pairs "
    f"({row['n_kept'] / max(row['n_total'], 1):.1%}) · files go to `{data.exports_dir(data.db_path())}`"
)


def do_export() -> dict | None:
    from prefsift.storage import exports

    try:
        path = data.export_path(name, fmt)
        who = {"exported_by": me.name, "exported_by_role": me.role} if me is not None else {}
        man = data.write(exports.export_selection, name, path, fmt, extra=who)
        if man is data.WRITE_BUSY:
            return None
        st.success(f"Exported {man['rows']:,} pairs to `{man['path']}` (sha256 {man['sha256'][:12]}…).")
        st.session_state["export_last"] = str(man["path"])
        return man
    except data.ERRORS as exc:
        st.error(f"Export failed: {exc}")
        return None


b = st.columns([1, 1, 3])
if b[0].button("Export", key="export_only"):
    do_export()
if b[1].button("Export and train", type="primary", key="export_train"):
    man = do_export()
    if man is not None:
        try:
            if policy is None:
                raise ValueError(
                    f"dataset {dataset} has no warmed-up policy θ yet: run `prefsift warmup --dataset {dataset}` "
                    "(or the demo) first"
                )
            job = data.start_job(
                ["train", "--selection", name, "--from", start, "--policy", str(policy["model_id"])]
            )
            st.session_state["export_job"] = job["job_id"]
            st.success(f"Started training job `{job['job_id']}`.")
        except (RuntimeError, ValueError, OSError) as exc:
            st.error(f"Could not start training: {exc}")


@st.fragment
def downloads() -> None:
    """The exports of this dataset (newest first), each downloadable with its manifest: the file
    is on the server, the person is in a browser."""
    past = data.cached("overview_table", "exports", dataset, default=None)
    if past is None or past.empty:
        return
    st.subheader("Exports")
    paths = [p for p in past["path"] if isinstance(p, str)]
    last = st.session_state.get("export_last")
    pick = st.selectbox(
        "export", paths, index=paths.index(last) if last in paths else 0, format_func=lambda p: Path(p).name
    )
    path = Path(pick)
    row = past[past["path"] == pick].iloc[0]
    dc = st.columns([2, 2, 3])
    if path.exists():
        dc[0].download_button(
            f"Download {path.suffix[1:]} ({int(row['n_rows']):,} pairs)",
            path.read_bytes,  # read when the person clicks, not on every rerun
            file_name=path.name,
            key="export_download",
            on_click="ignore",
            icon=":material/download:",
        )
        man = path.with_name(path.name + ".manifest.json")
        if man.exists():
            dc[1].download_button(
                "Download manifest",
                man.read_bytes,
                file_name=man.name,
                key="export_download_manifest",
                on_click="ignore",
            )
    else:
        dc[0].warning(f"`{path.name}` is no longer on the server.")
    dc[2].caption(f"selection `{row['selection']}` · {row['format']} · {row['created_at']}")
    data.show_table(past)


downloads()


job_notice.follow(
    "train", "Training", "export_job", "the trained model and its held-out metrics are in the ledger."
)

st.subheader("Ledger: held-out metrics of every trained model")
ledger = data.cached("ledger", dataset, default=pd.DataFrame())
if ledger is None or ledger.empty:
    st.caption("No model evaluated on this dataset yet: results appear here when a training job ends.")
else:
    lc = st.columns(2)
    lc[0].plotly_chart(charts.ledger_fig(ledger, "loss"), key="export_ledger_loss")
    lc[1].plotly_chart(charts.ledger_fig(ledger, "reward_accuracy"), key="export_ledger_acc")
    n_eval = ledger["n_pairs"].dropna()
    if len(n_eval):
        st.caption(
            f"Reward accuracy with its 95% interval (Wilson) over {int(n_eval.min()):,}"
            + (f"–{int(n_eval.max()):,}" if n_eval.max() != n_eval.min() else "")
            + " held-out pairs: two models whose intervals overlap are not shown to differ. Whether a selection beats"
            " the full data or a random subset of the same size, seeds and pairs paired: the Evidence page's"
            " experiment."
        )
    data.show_table(ledger)
