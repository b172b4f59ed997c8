"""One trainer per experiment folder: an advisory lock file that the operating system releases when
its holder dies, so a lock left by a killed run never blocks the next one."""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["FolderLockedError", "LOCK_NAME", "folder_lock"]

logger = logging.getLogger(__name__)
LOCK_NAME = ".train.lock"


class FolderLockedError(RuntimeError):
    """Another live process is training into the folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@contextmanager
def folder_lock(folder: str | os.PathLike, program: str) -> Iterator[None]:
    """Hold `<folder>/.train.lock` while the block runs.

    The file records "pid program start-time"; a lock whose holder is gone is taken over with a notice.
    Raises:
        FolderLockedError: a live process holds it ("another train.py (pid N) is training into ... since ...").
    """
    import fcntl

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.fspath(folder), LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        previous = os.read(fd, 200).decode("utf-8", "replace").split(" ", 2)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = previous[0] if previous[0].isdigit() else "?"
            holder = previous[1] if len(previous) > 1 else "a trainer"
            since = previous[2].strip() if len(previous) > 2 else "an unknown time"
            raise FolderLockedError(f"another {holder} (pid {pid}) is training into {os.fspath(folder)} since "
                                    f"{since}; wait for it to finish or stop it first") from None
        if previous[0].isdigit() and int(previous[0]) != os.getpid() and not _pid_alive(int(previous[0])):
            logger.info("%s: taking over the lock of %s (pid %s), which is no longer running",
                        folder, previous[1] if len(previous) > 1 else "a trainer", previous[0])
        stamp = f"{os.getpid()} {program} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file stays as a record of the last run
