"""A speaker's content units (`*.soft.pt`, float32 `[1, C, Tu]` per clip, unstretched) as rows
`[Tu, C]`, concatenated over the clips, for k-means and the retrieval index."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from core.checkpoint import safe_torch_load

__all__ = ["UnitFileError", "load_unit_rows", "speaker_unit_files"]

PathLike = str | os.PathLike


class UnitFileError(ValueError):
    """A unit file is missing, unreadable or has an unexpected shape; the message names the file."""


def speaker_unit_files(folder: PathLike, must_contain: str = ".soft.pt") -> list[Path]:
    """Unit files of one speaker folder, sorted by path, hidden files skipped.

    Args:
        folder: `dataset/44k/<speaker>`.
        must_contain: `".soft.pt"` for k-means (names ending with it, as 4.1 globbed), `".wav.soft.pt"`
            for the index (names containing it, as 4.1 filtered).
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    names = (p for p in root.iterdir() if not p.name.startswith("."))
    if must_contain == ".soft.pt":
        files = [p for p in names if p.name.endswith(".soft.pt")]
    else:
        files = [p for p in names if must_contain in p.name]
    return sorted(f for f in files if f.is_file())


def _as_rows(units: object, path: Path) -> np.ndarray:
    if not isinstance(units, torch.Tensor):
        raise UnitFileError(f"{path} holds a {type(units).__name__}, not a unit tensor [1, C, T]")
    if units.dim() == 3 and units.shape[0] == 1:
        units = units[0]
    if units.dim() != 2:
        raise UnitFileError(f"{path} has shape {tuple(units.shape)}; expected units [1, C, T]")
    return units.detach().float().cpu().numpy().T  # [Tu, C]


def load_unit_rows(files: Iterable[PathLike]) -> np.ndarray:
    """Concatenate the units of `files` as float32 rows `[sum Tu, C]`.

    Raises:
        UnitFileError: unreadable file, bad shape, or files with different channel counts.
    """
    rows: list[np.ndarray] = []
    first: Path | None = None
    for f in files:
        path = Path(f)
        try:
            units = safe_torch_load(path)
        except Exception as err:  # every loader failure means the same thing to the user
            raise UnitFileError(f"{path} is unreadable ({err}); re-run preprocess_hubert_f0.py") from None
        block = _as_rows(units, path)
        if rows and block.shape[1] != rows[0].shape[1]:
            raise UnitFileError(
                f"{path} has {block.shape[1]} channels but {first} has {rows[0].shape[1]} (files from "
                "two different speech encoders?); delete the old features and re-run preprocess_hubert_f0.py")
        first = first or path
        rows.append(block)
    if not rows:
        raise UnitFileError("no unit files given")
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)
