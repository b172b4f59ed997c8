"""Atomic file writes: a crash mid-write leaves the previous file intact and no partial file behind."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["DiskFullError", "TEMP_SUFFIX", "is_disk_full", "remove_stale_temps", "write_atomic",
           "write_bytes_atomic"]

PathLike = str | os.PathLike
TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random>.tmp" beside their target


class DiskFullError(OSError):
    """The disk filled up during a write; the previous file is intact and no partial file is left."""


def is_disk_full(err: BaseException, folder: Path) -> bool:
    """Whether `err`, raised while writing into `folder`, means the disk is full."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save's zip writer reports a full disk as a RuntimeError ("unexpected pos", "file write failed").
    try:
        return isinstance(err, RuntimeError) and shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def write_atomic(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through a temp file in the same folder, fsync it, then `os.replace` it over `path`.

    A crash or exception inside `write` leaves any previous file untouched and no temp file behind (the temp
    name starts with a dot, so every stage ignores a leftover).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        if hasattr(os, "fchmod"):  # the usual umask permissions, not mkstemp's owner-only ones
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(err, folder):
            free = shutil.disk_usage(folder).free
            full = DiskFullError(f"the disk of {folder} is full: writing {target.name} stopped after "
                                 f"{written / 2**20:.1f} MB ({free / 2**20:.1f} MB free). Free some space and run "
                                 "again; nothing was overwritten")
            full.errno = errno.ENOSPC
            raise full from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable; best effort (not possible on Windows)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    write_atomic(path, lambda f: f.write(data))


def remove_stale_temps(folder: PathLike, names: str = "") -> list[str]:
    """Delete the temp files an interrupted `write_atomic` left in `folder` (only those whose target name
    starts with `names`); returns their paths."""
    removed = []
    for entry in os.scandir(folder) if os.path.isdir(folder) else ():
        if entry.name.startswith(f".{names}") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
            os.remove(entry.path)
            removed.append(entry.path)
    return removed
