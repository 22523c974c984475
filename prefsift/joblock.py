"""One heavy job at a time per database: a second one queues (--wait) or is refused clearly.

Heavy jobs (scoring, influence, training) never hold the DuckDB file while they compute
(see ARCHITECTURE.md); this advisory lock only keeps two of them from computing the same
thing at once.

The lock is the file `<db>.joblock`, and its content names the holder. The holder's details
are written into a private file first, that file is locked (`flock`), and only then does it
appear under the lock's name, by an atomic hard link that fails if the name exists. So whoever
finds the name finds the holder's details in it, complete, at every instant. The OS lock on the
file tells a live holder from one that was killed: a killed job's file is no longer locked, and
the next job removes it, so a killed job never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
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
    # 1. the holder's details in a private file, locked before anyone can see it
    own = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    taken = False
    try:
        os.write(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this file: never blocks
        # 2. publish it under the lock's name, or find who holds it
        _take(path, own, db, wait)
        taken = True
        os.unlink(own)  # the lock's name now holds the file: no second name left lying around
        yield
    finally:
        if taken:
            _unlink_if_same(path, fd)  # release: the name goes first, then the OS lock
        with contextlib.suppress(FileNotFoundError):
            os.unlink(own)
        os.close(fd)


def _take(path: Path, own: Path, db, wait: bool) -> None:
    announced = False
    while True:
        try:
            os.link(own, path)  # atomic, and refused when the name exists
            return
        except FileExistsError:
            pass
        try:
            other = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # released between the two calls: try again
        try:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live holder
                if not wait:
                    raise UserError(
                        f"another prefsift job is running on {db} ({_holder(other)}); wait for it "
                        "to finish, or pass --wait to queue behind it"
                    ) from None
                if not announced:
                    print(f"prefsift: waiting for the job lock on {db} ...", file=sys.stderr)
                    announced = True
                fcntl.flock(other, fcntl.LOCK_EX)  # until that holder ends
            # We hold that file's OS lock, so its holder has ended. One that was killed could not
            # remove the name: remove it for them, if the name still is that file.
            _unlink_if_same(path, other)
        finally:
            os.close(other)


def _unlink_if_same(path: Path, fd: int) -> None:
    """Remove `path` if it still names the file open as `fd` (whose OS lock the caller holds;
    only the holder of a file's lock ever removes its name, so this check cannot race)."""
    with contextlib.suppress(FileNotFoundError):
        st, mine = os.stat(path), os.fstat(fd)
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            os.unlink(path)


def _holder(fd: int) -> str:
    try:
        d = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {d.get('pid')}: {d.get('what')}"
    except (OSError, ValueError):
        return "unknown holder"
