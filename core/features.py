"""Per-clip feature files: their names, the file lists that point at them, and their .npy I/O.

Next to every `X.wav` of `dataset/44k/<speaker>/` preprocessing writes `X.wav.soft.pt` (units),
`X.wav.f0.npy` ((f0, uv)), `X.spec.pt` (linear spectrogram) and, for volume embedding or shallow
diffusion, `X.wav.vol.npy`, `X.wav.mel.npy`, `X.wav.aug_mel.npy`, `X.wav.aug_vol.npy`.

`.f0.npy` is written as a plain float64 (2, T) array, which 4.1 unpacks the same way as its own
pickled pair; both forms are read. Object arrays go through the guarded unpickler, so a crafted file
cannot run code. `.aug_mel.npy` must stay an object array ([mel, keyshift]) for 4.1 to read it; its
pickle is written with `numpy.core` module names, which NumPy 1.x and 2.x both import.
"""
from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from core.atomic import write_atomic
from core.checkpoint import UnsafeCheckpointError
from core.pickle_guard import GuardedUnpickler

PathLike = str | os.PathLike

__all__ = ["DatasetError", "FEATURE_SUFFIXES", "feature_path", "list_speakers", "load_f0", "load_npy", "read_filelist",
           "save_f0", "save_npy", "save_object_npy", "spec_path", "speaker_of"]

# Suffix appended to `X.wav` for each per-clip feature (the spectrogram is named by `spec_path`).
FEATURE_SUFFIXES = {
    "units": ".soft.pt", "f0": ".f0.npy", "volume": ".vol.npy", "mel": ".mel.npy",
    "aug_mel": ".aug_mel.npy", "aug_vol": ".aug_vol.npy",
}


class DatasetError(ValueError):
    """The file lists, the config and the files on disk do not fit together (message says how to fix)."""


def feature_path(wav: str | os.PathLike, kind: str) -> str:
    """`X.wav` -> its feature file of `kind` (a key of FEATURE_SUFFIXES, or "spec")."""
    wav = os.fspath(wav)
    return spec_path(wav) if kind == "spec" else wav + FEATURE_SUFFIXES[kind]


def spec_path(wav_path: str | os.PathLike) -> str:
    """`X.wav` -> `X.spec.pt`: only the final `.wav` is replaced, as 4.1 names it."""
    wav = os.fspath(wav_path)
    return (wav[: -len(".wav")] if wav.endswith(".wav") else wav) + ".spec.pt"


def read_filelist(path: str | os.PathLike) -> list[str]:
    """Clip paths of a file list: field 0 of each `|`-separated line, blank lines ignored (UTF-8).

    Raises:
        DatasetError: the list is missing, not UTF-8, or names no clip.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise DatasetError(f"file list {name} not found; run python preprocess_flist_config.py first")
    try:
        with open(name, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{name} is not UTF-8 (written by an older tool?); re-run "
                           "python preprocess_flist_config.py") from None
    paths = [line.strip().split("|")[0] for line in lines if line.strip()]
    if not paths:
        raise DatasetError(f"{name} lists no clips. Put clips in dataset_raw/<speaker>/, run resample.py "
                           "and preprocess_flist_config.py again (a speaker needs at least 3 clips: "
                           "the first 2 go to the validation list).")
    return paths


def speaker_of(path: str) -> str:
    """Speaker of a list entry: its parent folder name (either slash style)."""
    parts = path.replace("\\", "/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def list_speakers(dataset: str | os.PathLike) -> list[str]:
    """Speaker folders of a dataset: non-hidden sub-directories, sorted by name (hidden folders such as
    `.ipynb_checkpoints` are no speakers, although 4.1 took some of them for one).

    Raises:
        DatasetError: the folder is missing.
    """
    if not os.path.isdir(dataset):
        raise DatasetError(f"dataset folder {os.fspath(dataset)} not found: run python resample.py first")
    return sorted(name for name in os.listdir(dataset)
                  if not name.startswith(".") and os.path.isdir(os.path.join(dataset, name)))


class _NpyUnpickler(GuardedUnpickler):
    def refuse(self, module: str, name: str) -> Any:
        raise UnsafeCheckpointError(
            f"{self.source} needs {module}.{name} to load, which a feature file never does; "
            "refused without running it")


def load_npy(path: PathLike) -> np.ndarray:
    """Read a .npy file; object arrays go through the restricted unpickler."""
    name = os.fspath(path)
    with open(name, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        _shape, _fortran, dtype = read_header(f)
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        array = _NpyUnpickler(f, name).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} does not hold an array")
    return array


def load_f0(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``X.wav.f0.npy`` -> (f0 [T] float64 Hz, uv [T] float64), from our plain or 4.1's object form."""
    data = load_npy(path)
    if len(data) != 2:
        raise ValueError(f"{os.fspath(path)} should hold (f0, uv); found {len(data)} rows")
    f0, uv = (np.asarray(row, dtype=np.float64) for row in data)
    if f0.shape != uv.shape or f0.ndim != 1:
        raise ValueError(f"{os.fspath(path)}: f0 {f0.shape} and uv {uv.shape} should be equal 1-D rows")
    return f0, uv


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Atomic ``np.save`` of a plain (non-object) array."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError("save_npy writes plain arrays only; use save_object_npy")
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def save_f0(path: PathLike, f0: np.ndarray, uv: np.ndarray) -> None:
    """Write (f0, uv) as a plain float64 (2, T) array that 4.1 reads unchanged."""
    save_npy(path, np.stack([np.asarray(f0, dtype=np.float64), np.asarray(uv, dtype=np.float64)]))


def save_object_npy(path: PathLike, items: list[Any]) -> None:
    """Write a 1-D object array (4.1's ``aug_mel`` layout) readable by NumPy 1.x and 2.x."""
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    # Protocol 2 spells globals as plain "c<module>\n<name>\n" text, so the NumPy 2 module path can
    # be renamed to the one both major versions import.
    payload = pickle.dumps(array, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")

    def write(f: Any) -> None:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(payload)

    write_atomic(path, write)
