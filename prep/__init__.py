"""Dataset preparation stage: `resample.py` (raw clips -> 44.1 kHz mono int16) and
`preprocess_flist_config.py` (train/val file lists and the generated configs)."""

from __future__ import annotations

import os

from modules.hparams import write_atomic

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `modules.hparams.write_atomic`)."""
    write_atomic(path, lambda f: f.write(data))
