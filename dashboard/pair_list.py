"""The list a person opened a pair from, so that the pair inspector's next/previous walk it.

Explore, Disagreements and Compare open a pair in the inspector of the same session (a table row
is selected, `st.switch_page` goes to the inspector): the list behind that table goes with it.
A Disagreements or Compare table is a few dozen ids, kept as they are; Explore's list is its
query (filters, sort), however many pairs match, answered by one window query per pair. Opened
directly (the page, a deep link), the inspector walks the dataset's scored pairs in row order.

The list also remembers the source page's settings, so "Back to …" returns to the same table.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from prefsift.dashboard import data
from prefsift.storage.pair_lists import ids_position, scored_filters

KEY = "inspect_list"
FRESH = "inspect_list_fresh"  # set by open_pair: the inspector was entered from that list
INSPECTOR = "views/inspector.py"
TITLES = {path: title for path, title, _ in data.PAGES}


def open_pair(
    pair_id: str,
    dataset: str,
    *,
    page: str,
    label: str,
    ids: list[str] | None = None,
    query: dict | None = None,
    restore: dict[str, Any] | None = None,
) -> None:
    """Open `pair_id` in the inspector of this session, walking the list it was picked from:
    `ids` (an explicit list) or `query` ({runs, filters, order_run, descending}); `restore`
    holds the source page's widget values for the way back."""
    st.session_state[KEY] = {
        "dataset": dataset,
        "page": page,
        "label": label,
        "ids": tuple(ids) if ids is not None else None,
        "query": query,
        "restore": restore or {},
    }
    st.session_state[FRESH] = True
    st.session_state["inspect_pair"] = pair_id
    st.session_state["inspect_linked"] = pair_id
    st.switch_page(INSPECTOR, query_params={"pair": pair_id, "dataset": dataset})


def pick(event, pair_ids) -> str | None:
    """The pair of the row selected in a `st.dataframe(..., on_select=...)` event, if any."""
    rows = list(getattr(getattr(event, "selection", None), "rows", None) or [])
    ids = list(pair_ids)
    return ids[rows[0]] if rows and 0 <= rows[0] < len(ids) else None


def table(
    df,
    dataset: str,
    *,
    prefix: str,
    page: str,
    label: str,
    note: str = "",
    query: dict | None = None,
    skip: tuple[str, ...] = (),
    column_config: dict | None = None,
) -> None:
    """A table whose selected row opens its pair in the inspector of this session (a link would
    open a new tab, a new session); next/previous there walk `query`, else this table's pairs in
    this order. The page's widgets (keys starting with `prefix`, but `skip`) are kept for the way
    back; the table's key is `<prefix>table_sel`. (A chart without on_select has no state to skip.)"""
    key = f"{prefix}table_sel"
    event = data.show_table(
        df,
        on_select="rerun",
        selection_mode="single-row",
        key=key,
        column_config=column_config,
    )
    st.caption(
        " ".join(
            filter(None, (note, "Select a row (the box at its left) to open the pair in the inspector."))
        )
    )
    picked = pick(event, df["pair_id"])
    if picked:
        open_pair(
            picked,
            dataset,
            page=page,
            label=label,
            ids=None if query else list(df["pair_id"]),
            query=query,
            restore=widget_values(prefix, skip=(key, *skip)),
        )


def widget_values(prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The current values of a page's plain widgets (keys starting with `prefix`), for the way back."""
    return {
        k: v
        for k, v in st.session_state.items()
        if isinstance(k, str) and k.startswith(prefix) and not any(k.startswith(s) for s in skip)
    }


def back_button(where: dict, key: str = "inspect_back") -> None:
    """A button back to the list's page with the settings it had when the pair was opened."""
    title = TITLES.get(where["page"], where["page"])
    if st.button(f"← Back to {title}", key=key):
        for k, v in where.get("restore", {}).items():
            st.session_state[k] = v
        st.session_state[f"{where['page']}_restored"] = where
        st.switch_page(f"views/{where['page']}.py", query_params={"dataset": where["dataset"]})


def entered_inspector() -> None:
    """Call at the top of the inspector. Entered from another page other than by open_pair (the
    menu, a deep link), the inspector walks the dataset's scored pairs: a list from before is
    dropped. Reruns of the inspector itself (next, previous, typing an id) keep it."""
    fresh = st.session_state.pop(FRESH, False)
    if st.session_state.get("app_prev_page") != "inspector" and not fresh:
        st.session_state.pop(KEY, None)


def md_escape(text: str) -> str:
    """Text shown through st.markdown as it is (search text, model names are data, not markup)."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()<>#+-.!|~$&" else ch for ch in str(text))


def _scored_run(runs) -> str | None:
    for metric in ("lossdiff", "irm", "if"):
        run = data.default_run(runs, metric)
        if run:
            return run
    return None if runs.empty else str(runs["run_id"].iloc[-1])


def position(dataset: str, pair_id: str) -> tuple[dict | None, dict | None, str]:
    """(where the pair sits: {index, total, prev, next} or None, the list it came from or None,
    a description of the list walked). None position: next/previous fall back to row order."""
    came_from = st.session_state.get(KEY)
    if came_from and came_from.get("dataset") == dataset:
        pos = None
        if came_from.get("ids") is not None:
            pos = ids_position(came_from["ids"], pair_id)
        elif came_from.get("query"):
            q = came_from["query"]
            snap = data.snapshot(dataset, list(q["runs"]), q["filters"].text)
            if snap is not None:
                pos = data.sq(
                    dataset,
                    "list_position",
                    tuple(q["runs"]),
                    q["filters"],
                    q["order_run"],
                    q["descending"],
                    pair_id,
                )
        if pos is not None:
            return pos, came_from, came_from["label"]
    runs = data.runs_table(dataset)
    run = _scored_run(runs)
    if run is None or data.snapshot(dataset, [run]) is None:
        return None, came_from, "the dataset by row order"
    pos = data.sq(dataset, "list_position", (run,), scored_filters(run), None, True, pair_id)
    return pos, came_from, "the dataset's scored pairs (row order)"
