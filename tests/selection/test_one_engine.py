"""One selection engine: every rule type through storage/engine.py, and `prefsift select`, the
Tune page's numbers and the export agree with it and with an oracle written apart (numpy, pandas
and hashlib), ties, missing scores, forced annotations and fully truncated pairs included."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from prefsift.cli import main
from prefsift.storage import annotations, connect, engine, explore
from prefsift.storage import rules as R
from prefsift.storage.runs import save_logp_run
from prefsift.storage.selections import member_ids

from .conftest import seed_db

RULES = [
    "lossdiff:10-90 & irm:10-90",  # the default rule: an intersection of percentile bands
    "irm:25-75",
    "irm:0-100",
    "irm:v-0.5-0.5",  # a value band
    "top:irm:15",  # ties at the 15th value
    "bottom:lossdiff:9",
    "random:0.35:seed=3",  # 0.35 * 108 = 37.8 -> 38 draws; without the 2 truncated pairs 37.1 -> 37
    "if:5-95 & random:0.5:seed=1 & top:irm:40",
]
N = 120
TRUNC = (11, 12)  # train pairs whose prompt fills max_length: 11 still has old scores, 12 none


@pytest.fixture()
def world(db_path):
    rng = np.random.default_rng(7)
    base = rng.normal(size=N)
    # Rounded to one decimal: many ties, also at the thresholds.
    scores = {
        "irm": np.round(base + 0.5 * rng.normal(size=N), 1),
        "lossdiff": np.round(base + 0.7 * rng.normal(size=N), 1),
        "if": base + 0.3 * rng.normal(size=N),
    }
    for v in scores.values():
        v[TRUNC[0]] = np.median(v)  # an old run scored it 0-ish: mid-band, kept unless left out
    info = seed_db(db_path, n=N, seed=7, scores=scores, nan_rows=3)  # irm: 3 NaN + 3 without a row
    ids = info["ids"]
    with connect(db_path) as con:
        lp = pa.table(
            {
                "pair_id": list(ids),
                "chosen_logp": [0.0] * N,
                "rejected_logp": [0.0] * N,
                "prompt_tokens": [8] * N,
                "chosen_tokens": [0 if i in TRUNC else 5 for i in range(N)],
                "rejected_tokens": [0 if i in TRUNC else 5 for i in range(N)],
                "truncated": [i in TRUNC for i in range(N)],
            }
        )
        save_logp_run(con, "lp-theta", "theta-fp", "syn", {"split": "train"}, lp)
        for m in scores:
            con.execute(
                "UPDATE score_runs SET config = ? WHERE run_id = ?",
                [json.dumps({"metric": m, "logp_runs": {"policy": "lp-theta"}}), f"syn-{m}"],
            )
            con.execute("DELETE FROM scores WHERE run_id = ? AND pair_id = ?", [f"syn-{m}", ids[TRUNC[1]]])
        train = np.flatnonzero(info["split"] == "train")
        irm = scores["irm"]
        low = min(
            (i for i in train if i not in TRUNC and not np.isnan(irm[i]) and info["keep_rows"]["irm"][i]),
            key=lambda i: irm[i],
        )
        mid = min(
            (i for i in train if i not in TRUNC and not np.isnan(irm[i]) and info["keep_rows"]["irm"][i]),
            key=lambda i: abs(irm[i] - np.nanmedian(irm)),
        )
        forced = {ids[low]: "keep", ids[mid]: "drop", ids[TRUNC[0]]: "keep"}
        for pid, f in forced.items():
            annotations.save_decision(con, "syn", pid, "curator-1", force=f, role="curator")
    info.update(db=db_path, forced=forced)
    return info


def _oracle(info, text: str) -> set[str]:
    """What the rule keeps, computed apart from the engine: numpy percentiles over the pool's
    scored pairs, sorting for top/bottom, hashlib for the random draw."""
    ids, n = info["ids"], len(info["ids"])
    trunc = np.isin(np.arange(n), TRUNC)
    pool = (info["split"] == "train") & ~trunc
    kept = pool.copy()
    for part in R.leaves(R.parse_rule(text)):
        if isinstance(part, R.RandomFraction):
            m = math.floor(part.fraction * pool.sum() + 0.5)

            def h(pid, seed=part.seed):
                return int.from_bytes(hashlib.md5(f"{pid}:{seed}".encode()).digest()[8:], "little")

            drawn = sorted(ids[pool], key=lambda p: (h(p), p))[:m]
            kept &= np.isin(ids, drawn)
            continue
        v = info["scores"][part.metric].copy()
        v[~info["keep_rows"][part.metric]] = np.nan
        v[TRUNC[1]] = np.nan
        ok = pool & ~np.isnan(v)
        if isinstance(part, R.Top):
            sign = -1 if part.largest else 1
            chosen = sorted(np.flatnonzero(ok), key=lambda i: (sign * v[i], ids[i]))[: part.k]
            kept &= np.isin(np.arange(n), chosen)
        else:
            lo, hi = (part.lo, part.hi) if part.mode == "value" else np.percentile(v[ok], [part.lo, part.hi])
            kept &= ok & (v >= lo) & (v <= hi)
    for pid, f in info["forced"].items():
        i = int(np.flatnonzero(ids == pid)[0])
        if pool[i]:
            kept[i] = f == "keep"
    return set(ids[kept])


def _cli(capsys, argv) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("text", RULES)
def test_cli_tune_and_export_agree_with_the_engine_and_the_oracle(world, text, tmp_path, capsys):
    db = str(world["db"])
    want = _oracle(world, text)
    dry = _cli(capsys, ["select", "--db", db, "--dataset", "syn", "--rule", text, "--dry-run"])
    out = _cli(capsys, ["select", "--db", db, "--dataset", "syn", "--rule", text, "--name", "s"])
    man = _cli(capsys, ["export", "--db", db, "--selection", "s", "--out", str(tmp_path / "s.jsonl")])
    exported = {json.loads(line)["pair_id"] for line in (tmp_path / "s.jsonl").read_text().splitlines()}
    with connect(db, read_only=True) as con:
        saved = set(member_ids(con, "s"))
        # The Tune page's numbers: its data function (dashboard/data.py evaluate_rule -> explore.tune).
        runs = out["selection"]["score_runs"] or {
            "irm": "syn-irm",
            "lossdiff": "syn-lossdiff",
            "if": "syn-if",
        }
        snap = explore.Snapshot(con, "syn")
        for r in runs.values():
            snap.load_run(con, r)
        tune = explore.tune(snap, text, runs, "train", engine.forced_annotations(con, "syn"))
    tuned = set(snap.ids.take(np.flatnonzero(tune["kept_mask"])).to_pylist())
    assert saved == exported == tuned == want
    assert dry["n_kept"] == out["selection"]["n_kept"] == man["rows"] == tune["n_kept"] == len(want)
    assert dry["n_missing"] == tune["n_missing"] and dry["n_truncated"] == tune["n_truncated"] == 2
    assert man["fully_truncated_left_out"]["n"] == 0  # the engine never kept them
    if text.startswith("random"):
        # Tune's "random, same size" baseline is the rule's own draw (no annotations: the same size).
        plain = explore.tune(snap, text, runs, "train", random_seed=R.parse_rule(text).seed)
        assert plain["random"]["n"] == plain["random"]["both"] == plain["n_kept"]


def test_missing_ties_and_forced_counts(world):
    with connect(world["db"], read_only=True) as con:
        res = engine.select(con, "syn", "irm:10-90").result
    lo = res.resolved["irm:10-90"]["lo"]
    irm = world["scores"]["irm"]
    train = world["split"] == "train"
    # a tie at the lower threshold: every tied pair is kept (inclusive bands)
    assert ((irm == lo) & train).sum() > 1
    # 3 NaN + 3 absent irm scores (one of them in val); the truncated pairs are counted apart
    lacking = train & (np.isnan(irm) | ~world["keep_rows"]["irm"]) & ~np.isin(np.arange(N), TRUNC)
    assert res.n_missing == res.missing["irm"] == lacking.sum() > 0 and res.n_truncated == 2
    assert (res.forced_keep, res.forced_drop) == (1, 1)  # the forced keep of a truncated pair is void


def test_verdicts_of_compare_are_the_engines_bands(world):
    """The Compare page's verdict per run is the engine's band (not a percent_rank window)."""
    with connect(world["db"], read_only=True) as con:
        snap = explore.Snapshot(con, "syn")
        for m in ("irm", "lossdiff"):
            snap.load_run(con, f"syn-{m}")
        a = set(engine.select(con, "syn", "irm:20-80", with_annotations=False).ids())
        b = set(engine.select(con, "syn", "lossdiff:20-80", with_annotations=False).ids())
    counts, flips = explore.verdict_flips(
        snap, "syn-irm", "syn-lossdiff", 20, 80, limit=1000, filters=explore.Filters(split="train")
    )
    both = _scored(world, "irm") & _scored(world, "lossdiff")
    assert counts["n"] == len(both) and counts["both"] == len(a & b)
    assert set(flips.loc[flips["keep_a"], "pair_id"]) == (a - b) & both
    assert set(flips.loc[flips["keep_b"], "pair_id"]) == (b - a) & both
    assert counts["a_only"] == len((a - b) & both) and counts["b_only"] == len((b - a) & both)


def _scored(info, metric: str) -> set[str]:
    v = info["scores"][metric].copy()
    v[~info["keep_rows"][metric]] = np.nan
    v[TRUNC[1]] = np.nan
    return set(info["ids"][(info["split"] == "train") & ~np.isnan(v)])


@pytest.mark.e2e
def test_demo_database_tune_page_cli_and_export_agree(demo_db, tmp_path, monkeypatch, capsys):
    """On the real demo pipeline's database: the Tune page (AppTest) starts from the rule and runs
    `prefsift select` uses by default and shows what it saves; the export holds exactly those."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from tests.conftest import copy_demo_db

    db = copy_demo_db(demo_db, tmp_path / "data")
    monkeypatch.setenv("PREFSIFT_DB", str(db))
    monkeypatch.chdir(tmp_path)
    app = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    at.switch_page("views/tune.py").run()
    assert not at.exception, [e.value for e in at.exception]
    metric = {m.label: m.value for m in at.metric}
    # `prefsift select` with its defaults: the same rule and the same runs as the page's defaults
    out = _cli(capsys, ["select", "--db", str(db), "--dataset", "demo", "--name", "tuned"])
    assert at.session_state["tune_parts"] == [
        (m, r, (10.0, 90.0)) for m, r in out["selection"]["score_runs"].items()
    ]
    man = _cli(
        capsys, ["export", "--db", str(db), "--selection", "tuned", "--out", str(tmp_path / "t.jsonl")]
    )
    rows = (tmp_path / "t.jsonl").read_text().splitlines()
    n = out["selection"]["n_kept"]
    assert int(metric["kept"].replace(",", "")) == n == man["rows"] == len(rows) > 0
    assert int(metric["missing a score"].replace(",", "")) == out["selection"]["resolved"]["n_missing"]
