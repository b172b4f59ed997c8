""".npy feature files: plain arrays where 4.1 can read them, restricted reading of 4.1's pickled ones.

4.1 writes ``X.wav.f0.npy`` and ``X.wav.aug_mel.npy`` as object arrays (a pickle inside the .npy).
We write ``.f0.npy`` as a plain float64 array of shape (2, T) — 4.1 unpacks it the same way
(``f0, uv = np.load(path, allow_pickle=True)``) — and read both forms. Object arrays are read
through an unpickler that allows only NumPy's array reconstruction, so a crafted file cannot run
code. ``.aug_mel.npy`` must stay an object array ([mel, keyshift]) for 4.1; we write its pickle with
``numpy.core`` module names, which both NumPy 1.x and 2.x can read (formats.md §2).
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np

from modules.checkpoint import UnsafeCheckpointError
from modules.hparams import write_atomic

PathLike = str | os.PathLike

# (module, name) pairs an object .npy written by NumPy 1.x or 2.x needs, and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles store bytes as latin-1 text
}


class _NpyUnpickler(pickle.Unpickler):
    def __init__(self, fp: io.BufferedIOBase, source: str) -> None:
        super().__init__(fp)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            # numpy.core is a deprecated alias of numpy._core under NumPy 2.
            module = module.replace("numpy.core.", "numpy._core.") if np.__version__[0] >= "2" else module
            return super().find_class(module, name)
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
