"""Decisions per annotator (storage/annotations.py): history, the effective-decision policy, what
selections and exports do with it, migration of schema-1 annotations, Cohen's κ, the review queue.
Storage level, on a synthetic database and on the real demo database."""

from __future__ import annotations

import json
import threading

import duckdb
import pytest

from prefsift.storage import annotations as A
from prefsift.storage import connect, engine, exports, selections
from prefsift.storage import rules as R
from prefsift.storage.errors import AnnotationConflict, NotFound
from prefsift.storage.schema import MIGRATIONS
from tests.conftest import copy_demo_db


def _ids(con, dataset, split="train"):
    return [r[0] for r in con.execute(
        "SELECT pair_id FROM pairs WHERE dataset = ? AND split = ? ORDER BY row_idx", [dataset, split]
    ).fetchall()]  # fmt: skip


# ---------------------------------------------------------------- the policy, case by case
CASES = [
    # (decisions [(annotator, role, force, swapped)], expected (force, swapped, status))
    ([("a", "annotator", "drop", False)], ("drop", False, "single")),
    ([("a", "annotator", "drop", False), ("b", "annotator", "drop", False)], ("drop", False, "agreed")),
    ([("a", "annotator", "drop", False), ("b", "annotator", "keep", False)], (None, False, "conflict")),
    ([("a", "annotator", None, True), ("b", "annotator", None, True)], (None, True, "agreed")),
    ([("a", "annotator", None, True), ("b", "annotator", None, False)], (None, False, "conflict")),
    # a curator's decision wins over any number of annotators
    (
        [
            ("a", "annotator", "drop", False),
            ("b", "annotator", "drop", False),
            ("c", "curator", "keep", False),
        ],
        ("keep", False, "curator"),
    ),
    # two curators who disagree: conflict (no one curator silently wins)
    ([("c", "curator", "keep", False), ("d", "curator", "drop", False)], (None, False, "conflict")),
    # flags and notes are commentary: different flags with the same decision agree
    ([("a", "annotator", "keep", False), ("b", "annotator", "keep", False)], ("keep", False, "agreed")),
]


@pytest.mark.parametrize("decided, expected", CASES)
def test_effective_decision_policy(syn, decided, expected):
    pid = str(syn["ids"][1])
    with connect(syn["db"]) as con:
        for i, (who, role, force, swapped) in enumerate(decided):
            A.save_decision(con, "syn", pid, who, flag=f"flag{i}", force=force, swapped=swapped, role=role)
        eff = A.effective_one(con, "syn", pid)
    assert (eff["force"], bool(eff["swapped"]), eff["status"]) == expected
    assert eff["n_annotators"] == len(decided)


def test_two_annotators_both_kept_with_history_and_a_stale_tab_is_told(syn):
    pid = str(syn["ids"][2])
    with connect(syn["db"]) as con:
        a = A.save_decision(con, "syn", pid, "alice", force="drop", note="off topic", expected=None)
        # bob opened the page before alice saved (he saw no decision of his own): both are kept
        b = A.save_decision(con, "syn", pid, "bob", force="keep", expected=None)
        assert set(A.decisions(con, "syn", pid)["annotator"]) == {"alice", "bob"}
        # alice again, from a stale second tab that saw no decision of hers: told, nothing written
        with pytest.raises(AnnotationConflict) as err:
            A.save_decision(con, "syn", pid, "alice", force="keep", expected=None)
        assert err.value.current["force"] == "drop" and "not saved" in str(err.value)
        A.save_decision(con, "syn", pid, "alice", force="keep", expected=a["updated_at"])  # her own version
        A.withdraw_decision(con, "syn", pid, "bob", expected=b["updated_at"])
        hist = A.history(con, "syn", pid)
    events = [(r["annotator"], r["action"], json.loads(r["before"] or "null"), json.loads(r["after"] or "null"))
              for r in hist.sort_values("event_id").to_dict("records")]  # fmt: skip
    assert [(w, act) for w, act, _, _ in events] == [
        ("alice", "save"), ("bob", "save"), ("alice", "save"), ("bob", "withdraw")
    ]  # fmt: skip
    assert events[0][2] is None and events[0][3]["force"] == "drop" and events[0][3]["note"] == "off topic"
    assert events[2][2]["force"] == "drop" and events[2][3]["force"] == "keep"  # before -> after
    assert events[3][2]["force"] == "keep" and events[3][3] is None
    assert all(r is not None for r in hist["saved_at"])


def test_simultaneous_saves_by_different_annotators_are_all_kept(syn):
    """Five people press save on the same pair at once, 10 rounds: every decision is stored, each
    once, and the history has exactly one row per save (DuckDB's write conflicts are retried)."""
    pid = str(syn["ids"][3])
    people = [f"p{i}" for i in range(5)]
    errors: list[str] = []
    seen = {p: None for p in people}
    for rnd in range(10):
        barrier = threading.Barrier(len(people))

        def save(who, rnd=rnd, barrier=barrier):
            try:
                with connect(syn["db"]) as con:
                    barrier.wait()
                    d = A.save_decision(con, "syn", pid, who, note=f"{who} {rnd}", expected=seen[who])
                seen[who] = d["updated_at"]
            except Exception as exc:  # noqa: BLE001 - any failure is the bug
                errors.append(repr(exc))

        threads = [threading.Thread(target=save, args=(p,)) for p in people]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    with connect(syn["db"], read_only=True) as con:
        dec = A.decisions(con, "syn", pid)
        n_hist = len(A.history(con, "syn", pid))
    assert sorted(dec["annotator"]) == people and set(dec["note"]) == {f"{p} 9" for p in people}
    assert n_hist == 50


def test_bad_input_names_the_pair_and_the_field(syn):
    pid = str(syn["ids"][4])
    with connect(syn["db"]) as con:
        with pytest.raises(ValueError, match=rf"pair '{pid}'.*'force'"):
            A.save_decision(con, "syn", pid, "alice", force="maybe")
        with pytest.raises(ValueError, match=r"'annotator' is empty"):
            A.save_decision(con, "syn", pid, " ")
        with pytest.raises(ValueError, match=r"'role'"):
            A.save_decision(con, "syn", pid, "alice", role="admin")
        with pytest.raises(NotFound, match=r"pair 'nope'.*dataset 'syn'"):
            A.save_decision(con, "syn", "nope", "alice", force="drop")
        assert A.history(con, "syn").empty  # nothing half-written


def test_selection_uses_the_effective_decision(syn):
    """Forced keep/drop reach a rule's members only through the effective decision: a conflict
    forces nothing, a curator's decision does."""
    with connect(syn["db"]) as con:
        base = set(engine.select(con, "syn", R.DEFAULT_RULE).ids())
        train = set(_ids(con, "syn"))
        kept, out = sorted(base)[0], sorted(train - base)[0]
        A.save_decision(con, "syn", kept, "alice", force="drop")
        A.save_decision(con, "syn", kept, "bob", force=None)  # disagrees: conflict
        A.save_decision(con, "syn", out, "alice", force="keep")
        A.save_decision(con, "syn", out, "bob", force="keep")  # agree: forced keep
        ids = set(engine.select(con, "syn", R.DEFAULT_RULE).ids())
        assert ids == base | {out}
        A.save_decision(con, "syn", kept, "carol", force="drop", role="curator")
        ids = set(engine.select(con, "syn", R.DEFAULT_RULE).ids())
        assert ids == (base - {kept}) | {out}
        assert A.forced(con, "syn") == {kept: "drop", out: "keep"}
        res = engine.select(con, "syn", R.DEFAULT_RULE).result
    assert (res.forced_keep, res.forced_drop) == (1, 1)


def _schema_1_db(tmp_path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)")  # fmt: skip
    con.execute(MIGRATIONS[0][2])
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'initial schema')")
    con.execute("INSERT INTO datasets (name) VALUES ('old')")
    con.execute(
        "INSERT INTO pairs (dataset, pair_id, row_idx, kind, prompt, chosen, rejected) VALUES "
        "('old', 'a', 0, 'standard', 'p', 'c', 'r'), ('old', 'b', 1, 'standard', 'p', 'c2', 'r2')"
    )
    con.execute(
        "INSERT INTO annotations (dataset, pair_id, flag, note, force, updated_at) VALUES "
        "('old', 'a', 'harmful', 'bad', 'drop', TIMESTAMP '2026-01-02 03:04:05'), ('old', 'b', NULL, 'fine', NULL, NULL)"
    )
    con.close()
    return db


@pytest.mark.parametrize("read_only", [False, True])
def test_migration_of_schema_1_annotations(tmp_path, read_only):
    """A schema-1 database's single-row annotations become '(unattributed)' curator decisions with a
    'migrated' history row, and select exactly the same pairs as before. A reader migrates it too
    (the dashboard, or `prefsift score` looking up its models before it writes): before, a read-only
    open refused it and the model lookup said "not a registered model"."""
    db = _schema_1_db(tmp_path)
    with connect(db, read_only=read_only) as con:
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == 2
        dec = A.decisions(con, "old").set_index("pair_id")
        eff = A.effective(con, "old").set_index("pair_id")
        hist = A.history(con, "old")
    assert set(dec["annotator"]) == {"(unattributed)"} and set(dec["role"]) == {"curator"}
    assert dec.loc["a", "force"] == "drop" and dec.loc["a", "note"] == "bad" and dec.loc["b", "force"] is None
    assert str(dec.loc["a", "updated_at"]) == "2026-01-02 03:04:05"
    assert eff.loc["a", "force"] == "drop" and eff.loc["a", "status"] == "curator"
    assert list(hist["action"]) == ["migrated", "migrated"]


def test_cohen_kappa_known_values():
    # p_o = 0.75; p_e = 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa = 0.5
    k = A.cohen_kappa(["x", "x", "y", "y"], ["x", "y", "y", "y"], n_boot=500)
    assert (k["n"], k["p_o"], k["p_e"]) == (4, 0.75, 0.5) and k["kappa"] == pytest.approx(0.5)
    # the classic 2x2 example (Cohen 1960 style): 50 items, 20 yes/yes, 15 no/no, 5 and 10 off
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    k = A.cohen_kappa(a, b)
    assert (
        k["p_o"] == pytest.approx(0.7) and k["p_e"] == pytest.approx(0.5) and k["kappa"] == pytest.approx(0.4)
    )
    assert -1 <= k["lo"] < k["kappa"] < k["hi"] <= 1 and k["hi"] - k["lo"] < 0.6
    assert A.cohen_kappa(a, b) == k  # seeded
    same = A.cohen_kappa(["x"] * 5, ["x"] * 5)
    assert same["p_o"] == 1 and same["p_e"] == 1 and same["kappa"] != same["kappa"]  # undefined: NaN
    with pytest.raises(ValueError, match="differ in length"):
        A.cohen_kappa(["x"], [])


@pytest.fixture(scope="module")
def demo_copy(demo_db, tmp_path_factory):
    return copy_demo_db(demo_db, tmp_path_factory.mktemp("team_demo"))


def test_agreement_and_conflicts_on_the_demo(demo_copy):
    with connect(demo_copy) as con:
        ids = _ids(con, "demo")[:20]
        for i, pid in enumerate(ids):
            A.save_decision(con, "demo", pid, "alice", force="drop" if i % 2 else None)
            # bob agrees on 15 of the 20
            b = ("drop" if i % 2 else None) if i < 15 else ("keep" if i % 2 else "drop")
            A.save_decision(con, "demo", pid, "bob", force=b)
        A.save_decision(con, "demo", ids[0], "carol", force="drop", role="curator")
        agree = A.agreement(con, "demo", n_boot=500)
        conf = A.conflicts(con, "demo")
        counts = A.status_counts(con, "demo")
    row = agree[(agree["annotator_a"] == "alice") & (agree["annotator_b"] == "bob")].iloc[0]
    la = ["drop" if i % 2 else "rule" for i in range(20)]
    lb = la[:15] + [("keep" if i % 2 else "drop") for i in range(15, 20)]
    k = A.cohen_kappa(la, lb, n_boot=500)
    assert row["pairs_both"] == 20 and row["agree"] == 15 and row["kappa"] == pytest.approx(k["kappa"])
    assert row["kappa_lo"] < row["kappa"] < row["kappa_hi"]
    # carol shares one pair with each of them: reported (n = 1), not hidden
    assert len(agree) == 3
    assert sorted(conf["pair_id"]) == sorted(ids[15:])
    assert counts == {"agreed": 14, "curator": 1, "conflict": 5}


def test_export_writes_swapped_pairs_corrected(demo_copy, tmp_path):
    with connect(demo_copy) as con:
        sel = selections.get_selection(con, "lossdiff-irm")
        members = sorted(
            r[0] for r in con.execute(
                "SELECT m.pair_id FROM selection_members m JOIN pairs p ON p.pair_id = m.pair_id "
                "WHERE m.selection = 'lossdiff-irm' ORDER BY p.row_idx"
            ).fetchall()
        )  # fmt: skip
        swap, disputed = members[0], members[1]
        A.save_decision(con, "demo", swap, "alice", swapped=True)
        A.save_decision(con, "demo", swap, "bob", swapped=True)  # agreed: corrected in the export
        A.save_decision(con, "demo", disputed, "alice", swapped=True)
        A.save_decision(con, "demo", disputed, "bob", swapped=False)  # conflict: written as stored
        stored = {
            r[0]: (r[1], r[2])
            for r in con.execute(
                "SELECT pair_id, chosen, rejected FROM pairs WHERE dataset = 'demo' AND pair_id IN (?, ?)",
                [swap, disputed],
            ).fetchall()
        }
        man = exports.export_selection(con, "lossdiff-irm", tmp_path / "out.jsonl")
    rows = {r["pair_id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert len(rows) == man["rows"] and sel["n_kept"] >= man["rows"]
    flat = (lambda v: json.dumps(v, sort_keys=True)) if isinstance(rows[swap]["chosen"], list) else str
    norm = (lambda s: json.dumps(json.loads(s), sort_keys=True)) if flat is not str else str
    assert flat(rows[swap]["chosen"]) == norm(stored[swap][1]) and flat(rows[swap]["rejected"]) == norm(
        stored[swap][0]
    )
    assert flat(rows[disputed]["chosen"]) == norm(stored[disputed][0])
    assert man["labels_swapped_corrected"]["pair_ids"] == [swap] and man["labels_swapped_corrected"]["n"] == 1
    on_disk = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert on_disk["labels_swapped_corrected"]["pair_ids"] == [swap]


def test_review_queue_orders_and_skips_decided_pairs(syn):
    with connect(syn["db"]) as con:
        train = _ids(con, "syn")
        q, n = A.review_queue(con, "syn", "alice", "disagreement", limit=5, split="train")
        # by hand: |percent rank in lossdiff - percent rank in irm| over the train pairs, largest first
        by_hand = con.execute(
            """
            WITH r AS (SELECT s.run_id, s.pair_id, 100 * percent_rank() OVER (PARTITION BY s.run_id ORDER BY s.value) k
                       FROM scores s JOIN pairs p USING (pair_id)
                       WHERE p.split = 'train' AND s.run_id IN ('syn-lossdiff', 'syn-irm')
                         AND s.value IS NOT NULL AND NOT isnan(s.value))
            SELECT pair_id, abs(max(k) FILTER (WHERE run_id = 'syn-lossdiff') - max(k) FILTER (WHERE run_id = 'syn-irm')) d
            FROM r GROUP BY pair_id ORDER BY d DESC NULLS LAST, pair_id LIMIT 5
            """
        ).fetchall()
        assert n == len(train) and list(q["value"]) == pytest.approx([d for _, d in by_hand])
        top = q["pair_id"].iloc[0]
        A.save_decision(con, "syn", top, "alice")  # "looked at it: the rule decides"
        q2, n2 = A.review_queue(con, "syn", "alice", "disagreement", limit=5, split="train")
        assert n2 == n - 1 and top not in set(q2["pair_id"])
        assert top in set(
            A.review_queue(con, "syn", "bob", "disagreement", limit=5, split="train")[0]["pair_id"]
        )
        edge, _ = A.review_queue(con, "syn", "alice", "band_edge", limit=10, split="train")
        assert list(edge["value"]) == sorted(edge["value"]) and edge["value"].iloc[0] < 1.0
        noisy, _ = A.review_queue(con, "syn", "alice", "noisy", limit=5, split="train")
        assert noisy["noise"].all()
        ra = list(A.review_queue(con, "syn", "alice", "random", limit=10)[0]["pair_id"])
        assert ra == list(A.review_queue(con, "syn", "alice", "random", limit=10)[0]["pair_id"])
        assert ra != list(A.review_queue(con, "syn", "bob", "random", limit=10)[0]["pair_id"])
        with pytest.raises(ValueError, match="review signal must be one of"):
            A.review_queue(con, "syn", "alice", "loudest")
