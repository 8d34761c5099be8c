"""Advisory file locks between processes (several ``lmbench run``, pool or SLURM workers).

``fcntl.flock`` locks die with their process, so a killed worker never leaves a stale lock.
They hold on local disks and on NFSv4, the usual cluster file systems.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from lmbench.core.errors import UnsafePath


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True):
    """Hold an exclusive lock on ``path``; yields False at once when ``wait`` is False and
    another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # never through a symbolic link: a planted one would create or lock its target
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path}: a symbolic link where lmbench keeps a lock; remove it") from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` now."""
    if not path.exists():
        return False
    with file_lock(path, wait=False) as mine:
        return not mine
