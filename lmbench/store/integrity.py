"""What happens to a file that fails verification on read, and to what killed writers leave.

Every file lmbench writes carries a checksum that reading verifies (``tensorfile`` for
tensors, ``results`` for parquet tables). A file that fails is never deleted: it is moved
under ``<root>/corrupt/``, keeping its path, so that whatever depended on it (a run, a cache
entry) is pending again and recomputed, and the bad copy stays for whoever wants to look.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("lmbench")

CORRUPT = "corrupt"
#: how writers name a file before renaming it into place: ``.<name>.<pid>.tmp``
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")
#: a temporary file untouched this long, whose writer is not running here, was left by a killed writer
STALE_AFTER_S = 60.0


def temporary(path: Path) -> Path:
    """Where a writer puts ``path``'s contents before renaming them into place: hidden, named
    so that ``stale_temporaries`` finds it once its writer is gone, and cleared of whatever a
    stranger planted there (a symbolic link would be written through). Renaming the temporary
    onto ``path`` replaces ``path`` itself, never a file it links to."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.is_dir() and not tmp.is_symlink():  # a folder an earlier writer of this pid staged
        shutil.rmtree(tmp)
    elif tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    return tmp


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """The ``temporary`` a block writes ``path``'s new contents to: renamed onto ``path`` when
    the block ends, removed when it fails (a full disk leaves no half-written file behind)."""
    tmp = temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the whole new one;
    nothing is written through a symbolic link."""
    with replacing(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def write_text(path: Path, text: str) -> None:
    """``write_bytes`` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def set_aside(path: Path, root: Path) -> Path | None:
    """Move ``path`` (inside ``root``) to ``root/corrupt/<its relative path>.<UTC time>``; the
    new path, or None where it cannot be moved (a read-only folder: it is then only skipped)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = root / CORRUPT / path.relative_to(root).with_name(f"{path.name}.{stamp}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    except FileNotFoundError:  # another reader set it aside first
        return None
    except OSError as exc:
        log.warning("%s: cannot be set aside (%s); skipped", path, exc.strerror)
        return None
    return target


def _writer_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def untouched(path: Path) -> bool:
    """Whether ``path`` has not been written for ``STALE_AFTER_S`` (False once it is gone)."""
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def stale_temporaries(root: Path) -> list[Path]:
    """Temporary files under ``root`` whose writer was killed before renaming them."""
    found = []
    for path in root.rglob(".*.tmp") if root.exists() else ():
        match = _TEMPORARY.match(path.name)
        if match and CORRUPT not in path.relative_to(root).parts and untouched(path) \
                and not _writer_running(int(match.group(1))):
            found.append(path)
    return found


def remove(paths: list[Path], what: str) -> None:
    """Delete ``paths`` (what killed writers left, never a result), saying so once."""
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        log.warning("removed %d %s left by killed processes, under %s", len(paths), what,
                    os.path.commonpath([str(p.parent) for p in paths]))
