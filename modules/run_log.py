"""Logging handlers attached to the root logger for the length of one run (training scripts)."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Sequence

__all__ = ["attached_handlers"]


@contextmanager
def attached_handlers(handlers: Sequence[logging.Handler], level: int = logging.INFO) -> Iterator[None]:
    """Add `handlers` to the root logger (at `level`) and remove and close them afterwards.

    Scripts call this inside `main`, so importing a module never configures logging.
    """
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
