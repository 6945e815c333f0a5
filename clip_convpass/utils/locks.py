"""Advisory file locks on output directories and cache entries (released by the OS if the holder dies)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from clip_convpass.utils.errors import UserError


class LockedError(UserError, RuntimeError):
    """Another process is using the same output directory or cache entry."""


@contextmanager
def _flock(path: str | os.PathLike, blocking: bool, what: str) -> Iterator[None]:
    """An advisory fcntl lock, released by the OS even if the holder is killed (so a resume never waits)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # a lock file holds only a pid: another user sharing the folder must be able to take it too
        fd, how = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+"
    except PermissionError:
        fd, how = os.open(path, os.O_RDONLY), "r"  # flock works on a read-only descriptor; no pid written
    if os.fstat(fd).st_uid == os.getuid():
        os.fchmod(fd, 0o666)
    with os.fdopen(fd, how) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise LockedError(f"{what} is in use by another process (pid {holder}, lock {path}); "
                              f"wait for it to finish or use another directory") from e
        try:
            if f.writable():
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def exclusive_lock(path: str | os.PathLike, what: str):
    """Fail at once if another process holds the lock."""
    return _flock(path, False, what)


def blocking_lock(path: str | os.PathLike):
    """Wait for another process holding the lock (e.g. computing the same cache entry)."""
    return _flock(path, True, str(path))


def is_locked(path: str | os.PathLike) -> bool:
    """Whether another process holds the lock now (a lock file left by a killed process is not held)."""
    import fcntl

    path = Path(path)
    if not path.is_file():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
