"""Guarded unpickling: one allow-list base for every pickle a user's file may carry.

A pickle can import and call anything; the files we read (4.1's object `.npy` arrays, fairseq
checkpoints, faiss indexes, `kmeans_10000.pt`) only ever need NumPy's array rebuilders and a few
builtins. `GuardedUnpickler` resolves exactly the globals in its `allowed` table and hands every
other name to `refuse`, so a crafted file is rejected before any of its code could run.
"""
from __future__ import annotations

import pickle
from typing import Any, ClassVar

import numpy as np

__all__ = ["GuardedUnpickler", "NUMPY_GLOBALS", "numpy_torch_safe_globals"]

_NP_CORE = np._core
# What an object array pickled by NumPy 1.x (numpy.core) or 2.x (numpy._core) needs, and nothing else.
NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    **{(mod, name): getattr(_NP_CORE.multiarray, name)
       for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("_codecs").encode,  # protocol-2 pickles store bytes as latin-1 text
}


def numpy_torch_safe_globals() -> list[Any]:
    """The same NumPy allowance for `torch.serialization.safe_globals` (weights-only torch loads)."""
    reconstruct = _NP_CORE.multiarray._reconstruct
    dtype_classes = [type(np.dtype(c)) for c in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1")]
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            *dtype_classes]


class GuardedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `allowed` globals; subclasses extend the table or `refuse`.

    `source` names the file in messages; `encoding` decodes Python 2 strings (torch.load passes its own).
    Persistent ids are refused by `pickle.Unpickler` itself unless a caller (torch.load) installs a loader.
    """

    allowed: ClassVar[dict[tuple[str, str], Any]] = NUMPY_GLOBALS

    def __init__(self, file: Any, source: str = "file", encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # Python-2 pickles
            module = "builtins"
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        return self.refuse(module, name)

    def refuse(self, module: str, name: str) -> Any:
        """Called for a global outside the table; raises (or returns an inert stand-in)."""
        raise pickle.UnpicklingError(f"{self.source}: refused to load; the file would import {module}.{name}. "
                                     "Nothing from the file was executed.")
