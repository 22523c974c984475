"""Pair inspector: one pair's texts (word diff), scores with percentiles, per-token log-prob
differences, its fate under every saved selection, and annotations. Deep link: ?pair=ID&dataset=D.

Pair texts are data, never markup: plain text goes through st.text, and the diff view
html-escapes every word before wrapping it in our own <span> tags.
"""

from __future__ import annotations

import json

import streamlit as st

from prefsift.dashboard import annotation_form, charts, data, job_notice, pair_list, review

st.title("Pair inspector")
dataset = data.require_dataset()
pair_list.entered_inspector()

qp_pair = st.query_params.get("pair")
if qp_pair and st.session_state.get("inspect_linked") != qp_pair:
    st.session_state["inspect_pair"] = qp_pair
    st.session_state["inspect_linked"] = qp_pair
if not st.session_state.get("inspect_pair"):
    # Streamlit forgets a widget's value when its page is left: come back to the pair the person
    # was on (kept under a plain key), else open on the first scored (train) pair.
    first = (
        st.session_state.get("inspect_current")
        or data.cached("neighbours", dataset, None, default=(None, None))[1]
    )
    st.session_state["inspect_pair"] = first or ""

c = st.columns([6, 1, 1])
pair_id = c[0].text_input("pair id", key="inspect_pair").strip()
bundle = data.cached("pair_bundle", dataset, pair_id or None, default=None)
if bundle is None:
    st.stop()  # busy: the notice is shown
# Next/previous walk the list the pair was opened from (Explore's filtered, sorted table, the
# Disagreements or Compare table), else the dataset's scored pairs; row order as the last resort.
pos, came_from, walked = (
    pair_list.position(dataset, pair_id) if bundle["pair"] is not None else (None, None, "")
)
prev_id, next_id = (pos["prev"], pos["next"]) if pos is not None else bundle["neighbours"]


def _go(target: str | None) -> None:
    if target and annotation_form.unsaved(pair_id) and not st.session_state.get("inspect_discard"):
        st.session_state["inspect_unsaved"] = target  # ask first: a typed note is not lost silently
        return
    st.session_state.pop("inspect_unsaved", None)
    st.session_state.pop("inspect_discard", None)
    if target:
        st.session_state["inspect_pair"] = target


c[1].button("◀ previous", on_click=_go, args=(prev_id,), disabled=prev_id is None, key="inspect_prev")
c[2].button("next ▶", on_click=_go, args=(next_id,), disabled=next_id is None, key="inspect_next")

pair = bundle["pair"]
if pair is None:
    st.warning(f"No pair `{pair_id}` in dataset **{dataset}**." if pair_id else "This dataset has no pairs.")
    st.stop()
st.query_params["pair"] = pair_id
st.query_params["dataset"] = dataset
st.session_state["inspect_linked"] = pair_id  # the URL now follows the session, not the reverse
st.session_state["inspect_current"] = pair_id
if st.session_state.get("inspect_unsaved"):
    wc = st.columns([5, 1])
    wc[0].warning("This pair's annotation has unsaved changes: save them below, or discard them and move on.")

    def _discard() -> None:  # a callback: it runs before the widgets, so it may move the pair
        st.session_state["inspect_discard"] = True
        _go(st.session_state.get("inspect_unsaved"))

    wc[1].button("Discard and move", key="inspect_discard_btn", on_click=_discard)
lc = st.columns([5, 1])
from_list = came_from is not None and pos is not None and walked == came_from["label"]
if pos is not None:
    where = f"Pair **{pos['index'] + 1:,} of {pos['total']:,}** " + (
        f"from {pair_list.md_escape(walked)}" if from_list else f"of {walked}"
    )
else:
    where = "This pair has no score: next/previous walk the dataset by row order"
if came_from is not None and not from_list:
    where += f" (it is not in the list you came from: {pair_list.md_escape(came_from['label'])})"
lc[0].markdown(where)
if came_from is not None:
    with lc[1]:
        pair_list.back_button(came_from)
st.caption(
    f"Row {pair['row_idx']} · split **{pair['split']}** · {pair['kind']}"
    + (" · **flagged noisy** (label swapped)" if pair["noise"] else "")
    + " · link to this pair, to share:"
)
st.code(data.pair_link(pair_id, dataset, st.context.url), language=None)


def flat(text: str, kind: str) -> str:
    """Conversational fields hold a JSON list of messages: show them as 'role: content' lines."""
    if kind != "conversational":
        return text
    try:
        msgs = json.loads(text)
        return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in msgs)
    except (ValueError, AttributeError, TypeError):
        return text


prompt, chosen, rejected = (flat(pair[k], pair["kind"]) for k in ("prompt", "chosen", "rejected"))
st.markdown("**Prompt**")
st.text(prompt)
diff = st.toggle("highlight differences", value=True, key="inspect_diff")
left, right = st.columns(2)
st.markdown(charts.DIFF_CSS, unsafe_allow_html=True)  # our own constant stylesheet, no data in it
if diff:
    dl, dr = charts.word_diff_html(chosen, rejected)
    left.markdown("**Chosen** (its own words in green)")
    left.markdown(charts.boxed(dl), unsafe_allow_html=True)
    right.markdown("**Rejected** (its own words in red)")
    right.markdown(charts.boxed(dr), unsafe_allow_html=True)
else:
    left.markdown("**Chosen**")
    left.text(chosen)
    right.markdown("**Rejected**")
    right.text(rejected)

# ---- scores under every run, with percentiles
st.subheader("Scores")
runs = data.runs_table(dataset)
if runs.empty:
    st.caption("No scores yet for this dataset.")
else:
    snap = data.snapshot(dataset, list(runs["run_id"]))
    if snap is not None:
        value, pct = zip(*(snap.percentile(r, pair_id) for r in runs["run_id"]))
        data.show_table(
            runs[["metric", "policy"]].assign(
                value=value, percentile=pct, run=runs["run_id"], created=runs["created_at"]
            ),
            column_config={
                "percentile": st.column_config.ProgressColumn(
                    "percentile", min_value=0, max_value=100, format="%.1f"
                )
            },
        )

# ---- per-token log-prob differences
st.subheader("Per-token log π − log π_ref")
toks = bundle["token_logps"]
if toks is not None and not toks.empty:
    newest = toks["run_id"].iloc[0]
    t = toks[toks["run_id"] == newest]
    cols = st.columns(2)
    for col, side in zip(cols, ("chosen", "rejected")):
        row = t[t["side"] == side]
        col.markdown(f"**{side}** (green: the policy likes the token more than the reference)")
        if not row.empty:
            r = row.iloc[0]
            col.markdown(
                charts.boxed(charts.token_html(list(r["tokens"]), list(r["logps"]), list(r["ref_logps"]))),
                unsafe_allow_html=True,
            )
    st.caption(
        f"From log-prob run `{newest}` (policy {t['policy'].iloc[0] or 'not recorded: explained before runs were linked'}). Hover a token for its difference."
    )
else:
    models = bundle["models"]
    names = models["name"].dropna().tolist() if models is not None and not models.empty else []
    roles = dict(zip(models["name"], models["role"])) if names else {}
    st.caption(
        "No per-token log-probs stored for this pair yet: compute them for one policy and its reference."
    )
    job_notice.show("explain-pair", pair_id, what="Explaining this pair")  # running, or why it failed
    if names:
        mc = st.columns([2, 2, 2])
        pol_i = next((i for i, n in enumerate(names) if roles.get(n) == "policy"), 0)
        ref_i = next((i for i, n in enumerate(names) if roles.get(n) == "reference"), len(names) - 1)
        pol = mc[0].selectbox("policy", names, index=pol_i, key="inspect_policy")
        ref = mc[1].selectbox("reference", names, index=ref_i, key="inspect_ref")
        if mc[2].button("Explain this pair", key="inspect_explain"):
            try:
                data.start_job(
                    ["explain-pair", "--dataset", dataset, "--pair", pair_id, "--policy", pol, "--ref", ref]
                )
                st.rerun()  # job_notice above picks the new job up and follows it
            except (RuntimeError, ValueError, OSError) as exc:
                st.error(f"Could not start the job: {exc}")


# ---- fate under each saved selection
st.subheader("Fate under saved selections")
fates = bundle["fates"]  # a table (maybe of no row): the page has stopped if the pair is missing
data.show_table(fates[["selection", "fate", "n_kept", "n_total", "created_at"]], "No selection saved yet.")

# ---- annotation (dashboard/annotation_form.py: safe for two annotators on one pair)
st.subheader("Annotation")
annotation_form.render(dataset, pair_id, bundle)
review.render(dataset, pair_id)
