"""prefsift's Streamlit dashboard: `prefsift serve` (or `streamlit run dashboard/app.py -- --db X`).

Reads only through `storage`; long work runs as `prefsift` CLI jobs in subprocesses.
"""
