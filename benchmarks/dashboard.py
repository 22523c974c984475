"""How fast the dashboard answers on 1,000,000 scored pairs.

Builds (once) a synthetic database with tests/dashboard/synth.py (1M pairs, 6 score runs
under two policy models, noise flags), then times
1. the storage queries behind each interaction (cold loads once, warm ones as the median of
   several calls with changing parameters), and
2. whole page runs with streamlit's AppTest (server time of a first page load and of a
   rerun after one widget change), in this process.

    python benchmarks/dashboard.py [--pairs 1000000] [--db /tmp/prefsift_bench/dash1m.duckdb]

Prints a table and writes benchmarks/results/dashboard.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import _common as C

CPU: list[float] = []  # the CPU ms of each timed() call, in order (read by main)


def timed(fn, repeats: int = 1):
    """(result, median wall ms); the median CPU ms of this process (all threads: DuckDB's and
    the app script's) is appended to CPU, a figure the other jobs on the machine do not inflate."""
    out, walls, cpus = C.timed(fn, repeats)
    CPU.append(1000 * statistics.median(cpus))
    return out, 1000 * statistics.median(walls)


def build(db: Path, n: int) -> dict:
    from prefsift.storage import connect
    from tests.dashboard.synth import make_db

    if db.exists():
        with connect(db, read_only=True) as con:
            have = con.execute("SELECT count(*) FROM pairs").fetchall()[0][0]
            runs = dict(con.execute("SELECT run_id, metric FROM score_runs").fetchall())
        if have == n:
            print(f"reusing {db} ({have:,} pairs)")
            return {"dataset": "synth", "runs": runs}
        db.unlink()
    db.parent.mkdir(parents=True, exist_ok=True)
    with C.Stopwatch() as sw:
        info = make_db(db, n=n, seed=0)
    print(f"built {db} with {n:,} pairs in {sw.wall:.0f}s")
    return {"dataset": info["dataset"], "runs": {v: k for k, v in info["runs"].items()}}


def storage_timings(db: Path, dataset: str) -> list[tuple[str, float, str]]:
    from prefsift.storage import connect, explore
    from prefsift.storage.explore import Filters

    rows = []
    with connect(db, read_only=True) as con:
        runs = explore.score_runs(con, dataset)
    r = {f"{m}_{p[-1]}": run for m, p, run in zip(runs["metric"], runs["policy"], runs["run_id"])}
    _, ms = timed(lambda i: connect(db, read_only=True).__enter__().close())
    rows.append(("open a read-only connection", ms, "per query; short-lived by design"))
    with connect(db, read_only=True) as con:
        snap, ms = timed(lambda i: explore.Snapshot(con, dataset))
        rows.append(("cold: snapshot of pairs (ids, split, noise)", ms, "once per db version"))
        _, ms = timed(lambda i: snap.load_run(con, r["irm_a"]))
        rows.append(("cold: load one score run", ms, "once per run and db version"))
        for k in ("lossdiff_a", "if_a", "tif_a", "irm_b", "lossdiff_b"):
            snap.load_run(con, r[k])
        _, ms = timed(lambda i: snap.load_text(con, "paris cat"))
        rows.append(("cold: text search (ILIKE on 3 text columns)", ms, "once per search string"))
    _, ms = timed(lambda i: snap.ranks(r["irm_a"]))
    rows.append(("cold: percent_rank of one run", ms, "once per run (disagreements, compare)"))
    _, ms = timed(lambda i: snap.hash_order(0))
    rows.append(("cold: md5 order of the random draw", ms, "once per seed (Tune's random baseline)"))
    snap.ranks(r["lossdiff_a"])
    snap.ranks(r["irm_b"])

    def with_con(fn):
        def run(i):
            with connect(db, read_only=True) as con:
                return fn(con, i)

        return run

    bins = [40, 50, 60, 70, 80]
    warm = [
        (
            "histogram of a score (60 bins)",
            lambda i: snap.histogram(r["irm_a"], bins[i], Filters(split="train")),
        ),
        (
            "scatter: 4,000-pair hash sample",
            lambda i: snap.scatter_sample(r["lossdiff_a"], r["irm_a"], r["tif_a"], 4000 - i),
        ),
        ("density: 80x80 bins of every pair", lambda i: snap.bins_2d(r["lossdiff_a"], r["irm_a"], bins[i])),
        (
            "table page: count + 50 rows, sorted by a score",
            lambda i: (
                snap.count([r["irm_a"]]),
                snap.page([r["irm_a"], r["lossdiff_a"]], order_run=r["irm_a"], offset=50 * i),
            ),
        ),
        (
            "table page: box-selection ranges",
            lambda i: snap.page(
                [r["irm_a"], r["lossdiff_a"]],
                Filters(ranges=((r["irm_a"], -1 + 0.1 * i, 1), (r["lossdiff_a"], -0.01, 0.02))),
            ),
        ),
        (
            "table page: text filter (cached search)",
            lambda i: snap.page([r["irm_a"]], Filters(text="paris cat"), offset=i),
        ),
        (
            "page text previews (50 pairs, db)",
            with_con(
                lambda con, i: (lambda pg: explore.previews(con, dataset, pg["pair_id"], 100, pg["rid"]))(
                    snap.page([r["irm_a"]], order_run=r["irm_a"], offset=50 * i)
                )
            ),
        ),
        (
            "tune: 2 bands -> engine counts, thresholds, histograms, overlaps, random draw",
            lambda i: explore.tune(
                snap,
                f"lossdiff:{10 + i}-90 & irm:10-{90 - i}",
                {"lossdiff": r["lossdiff_a"], "irm": r["irm_a"]},
                "train",
                compare={"TIF": snap.load_run_values(r["tif_a"]) == 1},
            ),
        ),
        (
            "disagreements: top 50 by rank difference",
            lambda i: snap.disagreements(r["irm_a"], r["lossdiff_a"], 50, 50 * i),
        ),
        (
            "compare: rank correlation",
            lambda i: snap.rank_correlation(r["irm_a"], r["irm_b"], Filters(split=("train", None)[i % 2])),
        ),
        ("compare: verdict flips", lambda i: explore.verdict_flips(snap, r["irm_a"], r["irm_b"], 10 + i, 90)),
        (
            "inspector: pair + neighbours + fates (db)",
            with_con(
                lambda con, i: (
                    explore.neighbour_ids(con, dataset, snap.ids[1000 * i].as_py()),
                    explore.pair_fates(con, dataset, snap.ids[1000 * i].as_py()),
                )
            ),
        ),
        (
            "inspector: percentiles of 6 runs",
            lambda i: [snap.percentile(run, snap.ids[1000 * i].as_py()) for run in r.values()],
        ),
    ]
    for name, fn in warm:
        _, ms = timed(fn, repeats=5)
        rows.append((name, ms, "warm, median of 5"))
    return rows


def apptest_timings(db: Path) -> list[tuple[str, float, str]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["PREFSIFT_DB"] = str(db)
    app = str(C.ROOT / "dashboard" / "app.py")
    rows = []
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(app, default_timeout=300)
    _, ms = timed(lambda i: at.run())
    rows.append(("first page load: Overview (empty caches)", ms, "AppTest, server time"))
    for page in ("explore", "tune", "disagreements", "inspector", "compare", "export_train"):
        _, ms = timed(lambda i, page=page: at.switch_page(f"views/{page}.py").run())
        rows.append((f"first visit: {page}", ms, "loads the runs it needs"))
        _, ms = timed(lambda i: at.run(), repeats=3)
        rows.append((f"rerun: {page}", ms, "median of 3"))
        assert not at.exception, [e.value for e in at.exception]
    at.switch_page("views/tune.py").run()
    steps = [(20.0, 90.0), (25.0, 85.0), (30.0, 80.0)]
    _, ms = timed(lambda i: at.slider(key="tune_band_lossdiff").set_value(steps[i]).run(), repeats=3)
    rows.append(("interaction: move a Tune band", ms, "median of 3"))
    at.switch_page("views/explore.py").run()
    pages = [2, 3, 4]
    _, ms = timed(lambda i: at.number_input(key="explore_page").set_value(pages[i]).run(), repeats=3)
    rows.append(("interaction: next page of the Explore table", ms, "median of 3"))
    views = ["density", "sample", "density"]
    _, ms = timed(lambda i: at.radio(key="explore_view").set_value(views[i]).run(), repeats=3)
    rows.append(("interaction: Explore sample <-> density", ms, "median of 3"))
    at.switch_page("views/disagreements.py").run()
    dirs = ["a_high", "b_high", "both"]
    _, ms = timed(lambda i: at.selectbox(key="disagree_dir").set_value(dirs[i]).run(), repeats=3)
    rows.append(("interaction: Disagreements direction", ms, "median of 3"))
    assert not at.exception, [e.value for e in at.exception]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/prefsift_bench/dash1m.duckdb")
    ap.add_argument("--out", default=str(C.RESULTS / "dashboard.md"))
    args = ap.parse_args()
    db = Path(args.db)
    load0 = C.load()
    info = build(db, args.pairs)
    rows = storage_timings(db, info["dataset"])
    rows += apptest_timings(db)
    lines = [
        "## Dashboard at 1M pairs (benchmarks/dashboard.py)",
        "",
        f"- {C.about(load0)}",
        f"- command: `python benchmarks/dashboard.py --pairs {args.pairs}`",
        f"- data: {args.pairs:,} synthetic pairs, 6 score runs (IRM, LossDiff, IF, TIF under theta_a; IRM, LossDiff "
        "under theta_b), 10% noise flags; machine shared with other jobs, so timings are noisy.",
        "",
        "| what | wall ms | CPU ms | note |",
        "| --- | ---: | ---: | --- |",
        *[f"| {n} | {ms:,.0f} | {c:,.0f} | {note} |" for (n, ms, note), c in zip(rows, CPU)],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Keep the hand-written interpretation that follows the table in an existing file.
    old = out.read_text() if out.exists() else ""
    notes = old[old.index("### Reading") :] if "### Reading" in old else ""
    out.write_text(text + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
