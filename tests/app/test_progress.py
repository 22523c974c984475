"""Progress: one process of a multi-process run reports (bar and status file); the others stay quiet."""

from __future__ import annotations

from prefsift.progress import Progress, read_status


def test_only_the_main_process_writes_the_status_file(tmp_path, monkeypatch):
    status = tmp_path / "status.json"
    monkeypatch.setenv("PREFSIFT_STATUS_FILE", str(status))
    monkeypatch.delenv("PREFSIFT_NO_PROGRESS", raising=False)
    with Progress(8, "scoring", main=False) as other:
        other.update(4)
        assert other.bar.disable
    assert not status.exists()
    with Progress(8, "scoring", initial=2) as main:
        main.update(4)
        assert not main.bar.disable
    assert read_status(status)["done"] == 6 and read_status(status)["total"] == 8
