"""One heavy job at a time per database: a second one queues (--wait) or is refused clearly.

Heavy jobs (scoring, influence, training) never hold the DuckDB file while they compute
(see ARCHITECTURE.md); this advisory lock only keeps two of them from computing the same
thing at once. It is an OS file lock, so a killed job releases it automatically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from prefsift.errors import UserError


def lock_path(db: str | os.PathLike) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".joblock")


@contextlib.contextmanager
def job_lock(db: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    path = lock_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        if wait:
            print(f"prefsift: waiting for the job lock on {db} ...", file=sys.stderr) if _held(fd) else None
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            holder = _holder(path)
            raise UserError(
                f"another prefsift job is running on {db} ({holder}); wait for it to finish, "
                "or pass --wait to queue behind it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _held(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True


def _holder(path: Path) -> str:
    try:
        d = json.loads(path.read_text() or "{}")
        return f"pid {d.get('pid')}: {d.get('what')}"
    except (OSError, ValueError):
        return "unknown holder"
