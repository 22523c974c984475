"""Progress for long work: a tqdm bar for people, a JSON status file for other processes.

The status file ($PREFSIFT_STATUS_FILE, which the job launcher sets) is replaced atomically at most twice a second, so the dashboard can read a running
job's progress without touching the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm


def write_status(path: str | os.PathLike | None, **fields) -> None:
    if not path:
        return
    path = Path(path)
    data = read_status(path)
    data.update(fields, updated_at=time.time(), pid=os.getpid())
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, default=str))
        tmp.replace(path)


def read_status(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


class Progress:
    """`with Progress(total, "scoring theta") as p: p.update(n)`."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "pair",
        initial: int = 0,
        main: bool = True,
    ) -> None:
        # One process reports: the other ranks of a multi-process run neither draw a bar nor write
        # the status file (they would overwrite the main process's counts with their own slice's).
        self.status_path = os.environ.get("PREFSIFT_STATUS_FILE") if main else None
        self.desc = desc
        self.total = total
        self.done = initial
        self._t0 = time.monotonic()
        self._start_done = initial
        self._last_write = 0.0
        disable = not main or os.environ.get("PREFSIFT_NO_PROGRESS") == "1"
        self.bar = tqdm(
            total=total, desc=desc, unit=unit, initial=initial, disable=disable, dynamic_ncols=True
        )
        self._write(force=True)

    def update(self, n: int = 1, **extra) -> None:
        self.done += n
        self.bar.update(n)
        self._write(**extra)

    def _write(self, force: bool = False, **extra) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < 0.5:
            return
        self._last_write = now
        elapsed = now - self._t0
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 and self.total else None
        write_status(
            self.status_path, stage=self.desc, done=self.done, total=self.total, rate=rate, eta_s=eta, **extra
        )

    def close(self) -> None:
        self._write(force=True)
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
