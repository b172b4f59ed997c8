"""Unit files and unit rows shared by k-means training, index training and inference."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from core.checkpoint import CheckpointError, safe_torch_load

PathLike = str | os.PathLike
ArrayLike = np.ndarray | torch.Tensor


class ClusterFileError(CheckpointError):
    """A k-means / index file is not in the 4.1 layout, or does not fit the units or speaker."""


class UnitFileError(ValueError):
    """A unit file is missing, unreadable or has an unexpected shape; the message names the file."""


def speaker_unit_files(folder: PathLike, must_contain: str = ".soft.pt") -> list[Path]:
    """Unit files of `dataset/44k/<speaker>` by path, hidden ones skipped; UnitFileError when there is none.
    `must_contain`: ".soft.pt" for k-means (names ending with it, as 4.1 globbed) or ".wav.soft.pt" for the
    index (names containing it, as 4.1 filtered)."""
    root = Path(folder)
    names = [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
    files = sorted(p for p in names if p.is_file() and (
        p.name.endswith(must_contain) if must_contain == ".soft.pt" else must_contain in p.name))
    if not files:
        raise UnitFileError(f"{root} has no *{must_contain} files. You need to run preprocess_hubert_f0.py!")
    return files


def load_unit_rows(files: Iterable[PathLike]) -> np.ndarray:
    """Concatenate the units of `files` (float32 `[1, C, Tu]` each, unstretched) as float32 rows `[sum Tu, C]`;
    UnitFileError for an unreadable file, a bad shape, or files with different channel counts."""
    rows: list[np.ndarray] = []
    first: Path | None = None
    for path in map(Path, files):
        try:
            units = safe_torch_load(path)
        except Exception as err:  # every loader failure means the same thing to the user
            raise UnitFileError(f"{path} is unreadable ({err}); re-run preprocess_hubert_f0.py") from None
        if not isinstance(units, torch.Tensor):
            raise UnitFileError(f"{path} holds a {type(units).__name__}, not a unit tensor [1, C, T]")
        if units.dim() == 3 and units.shape[0] == 1:
            units = units[0]
        if units.dim() != 2:
            raise UnitFileError(f"{path} has shape {tuple(units.shape)}; expected units [1, C, T]")
        block = units.detach().float().cpu().numpy().T  # [Tu, C]
        if rows and block.shape[1] != rows[0].shape[1]:
            raise UnitFileError(
                f"{path} has {block.shape[1]} channels but {first} has {rows[0].shape[1]} (files from "
                "two different speech encoders?); delete the old features and re-run preprocess_hubert_f0.py")
        first = first or path
        rows.append(block)
    if not rows:
        raise UnitFileError("no unit files given")
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)


def unit_rows(x: ArrayLike, dim: int, holder: str) -> np.ndarray:
    """Units `[T, C]` (array or tensor) as contiguous float32 rows; ClusterFileError unless C == `dim`."""
    rows = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ClusterFileError(f"units have shape {tuple(rows.shape)} but {holder} has {dim}-dim vectors "
                               "(built with another speech encoder?)")
    return np.ascontiguousarray(rows, dtype=np.float32)
