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
    except OSError:  # alive, but another user's
        pass
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
        fields = os.read(fd, 200).decode("utf-8", "replace").split(" ", 2)
        pid, holder, since = fields + ["?", "a trainer", "an unknown time"][len(fields):]
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(f"another {holder} (pid {pid or '?'}) is training into {os.fspath(folder)} "
                                    f"since {since.strip()}; wait for it to finish or stop it first") from None
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            logger.info("%s: taking over the lock of %s (pid %s), which is no longer running", folder, holder, pid)
        stamp = f"{os.getpid()} {program} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file stays as a record of the last run
