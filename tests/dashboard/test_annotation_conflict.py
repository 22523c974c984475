"""Two annotators saving the same pair: retried on DuckDB's write conflict, the second told (#20 bug 2)."""

from __future__ import annotations

import threading

import duckdb
import pytest

from prefsift.storage import connect, explore
from prefsift.storage.errors import AnnotationConflict
from tests.annotate import save_annotation


def test_stale_save_is_refused_with_the_current_values(seeded):
    ds, pid = seeded["dataset"], seeded["pair_ids"][7]
    with connect(seeded["db"]) as con:
        save_annotation(con, ds, pid, None, None, None)  # start clean
        first = save_annotation(con, ds, pid, "harmful", "A's note", None, expected=None)
        assert first["note"] == "A's note" and first["updated_at"] is not None
        # B opened the page before A saved (B saw no annotation): B's save must not overwrite A's.
        with pytest.raises(AnnotationConflict) as err:
            save_annotation(con, ds, pid, "other", "B's note", "drop", expected=None)
        assert err.value.current["note"] == "A's note" and "not saved" in str(err.value)
        assert explore.get_annotation(con, ds, pid)["note"] == "A's note"
        # Saving over the version one saw works, and clearing over a stale one is refused too.
        again = save_annotation(con, ds, pid, None, "A again", None, expected=first["updated_at"])
        with pytest.raises(AnnotationConflict):
            save_annotation(con, ds, pid, None, None, None, expected=first["updated_at"])
        save_annotation(con, ds, pid, None, None, None, expected=again["updated_at"])
        assert explore.get_annotation(con, ds, pid) is None


def test_simultaneous_saves_on_two_connections(seeded):
    """Two sessions of one server = two connections of one process: DuckDB aborts one transaction
    with 'Conflict on update!' when both write the row. 30 rounds: one saved, the other told."""
    ds, pid = seeded["dataset"], seeded["pair_ids"][8]
    with connect(seeded["db"]) as con:
        save_annotation(con, ds, pid, None, None, None)
        seen = save_annotation(con, ds, pid, None, "start", None)["updated_at"]
    outcome = {"saved": 0, "told": 0, "errors": []}
    lock = threading.Lock()
    for i in range(30):
        barrier = threading.Barrier(2)

        def save(who: str, seen=seen, barrier=barrier, i=i) -> None:
            try:
                with connect(seeded["db"]) as con:
                    barrier.wait()
                    save_annotation(con, ds, pid, None, f"{who} {i}", None, expected=seen)
                with lock:
                    outcome["saved"] += 1
            except AnnotationConflict:
                with lock:
                    outcome["told"] += 1
            except (duckdb.Error, Exception) as exc:  # noqa: BLE001 - any other failure is the bug
                with lock:
                    outcome["errors"].append(repr(exc))

        threads = [threading.Thread(target=save, args=(w,)) for w in "AB"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with connect(seeded["db"], read_only=True) as con:
            seen = explore.get_annotation(con, ds, pid)["updated_at"]
    assert outcome == {"saved": 30, "told": 30, "errors": []}


def test_a_writer_waits_for_a_reader_of_the_same_process(seeded):
    """The server's sessions share one process: while one reads (a read-only connection) another's
    save must wait for it, not fail with DuckDB's 'different configuration' error."""
    ds, pid = seeded["dataset"], seeded["pair_ids"][9]
    with connect(seeded["db"], read_only=True) as reader:
        done = {}

        def write() -> None:
            try:
                with connect(seeded["db"], timeout_s=20) as con:
                    done["saved"] = save_annotation(con, ds, pid, None, "while reading", None)
            except Exception as exc:  # noqa: BLE001 - reported below
                done["error"] = repr(exc)

        t = threading.Thread(target=write)
        t.start()
        reader.execute("SELECT count(*) FROM pairs").fetchall()
        t.join(0.5)  # the writer is still waiting for this reader
    t.join(20)
    assert "error" not in done, done
    assert done["saved"]["note"] == "while reading"
