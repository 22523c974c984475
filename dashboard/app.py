"""The dashboard's entry: page navigation, the database and dataset picker, deep links.

`streamlit run dashboard/app.py -- --db work/hh.duckdb` (or PREFSIFT_DB, or `prefsift serve`).
A deep link `?pair=<pair_id>&dataset=<name>` opens the pair inspector on that pair.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the folder that holds the
# prefsift package: the repository root (dashboard/ beside prefsift/, which links to it) or,
# installed, site-packages (this file is prefsift/dashboard/app.py there).
_HERE = Path(__file__).resolve().parent
_ROOT = str(_HERE.parent.parent if (_HERE.parent / "__init__.py").exists() else _HERE.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from prefsift.dashboard import data, identity  # noqa: E402

st.set_page_config(page_title="prefsift", page_icon=":material/filter_alt:", layout="wide")

pages = {
    name: st.Page(
        str(_HERE / "views" / f"{name}.py"), title=title, icon=icon, url_path=name, default=name == "overview"
    )
    for name, title, icon in data.PAGES
}
# A team server (sign-in configured) shows nothing, not even the page list, before sign-in.
who = identity.current()
nav = st.navigation(list(pages.values()), position="sidebar" if who else "hidden")
identity.gate()
# The page of the previous run and of this one (the inspector asks how it was entered).
st.session_state["app_prev_page"] = st.session_state.get("app_page")
st.session_state["app_page"] = nav.url_path or "overview"
if "pair" in st.query_params and nav.url_path == "":
    # A deep link to the root (`/?pair=ID&dataset=D`) opens the pair inspector.
    st.switch_page(pages["inspector"], query_params=st.query_params.to_dict())


def sidebar() -> None:
    db = data.db_path()
    st.sidebar.caption(f"Database: `{db}`")
    if not db.exists():
        return
    ds = data.datasets()
    names = list(ds["name"]) if ds is not None and "name" in ds else []
    if not names:
        return
    wanted = st.query_params.get("dataset")
    if (
        wanted in names
        and st.session_state.get("app_dataset") != wanted
        and "app_dataset_linked" not in st.session_state
    ):
        st.session_state["app_dataset"] = wanted
        st.session_state["app_dataset_linked"] = True
    if st.session_state.get("app_dataset") not in names:
        st.session_state["app_dataset"] = names[0]
    st.sidebar.selectbox("Dataset", names, key="app_dataset")
    row = ds[ds["name"] == st.session_state["app_dataset"]].iloc[0]
    st.sidebar.caption(
        f"{int(row['pairs']):,} pairs · {int(row['train']):,} train · {int(row['val']):,} val · "
        f"{int(row['noisy']):,} flagged noisy"
    )


sidebar()
nav.run()
