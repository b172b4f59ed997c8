"""Feature-retrieval index: training (`train_index.py`), the `feature_and_index.pkl` file, and lookup.

The file is a pickle of `{speaker_id: faiss index}`, each index pickled as its class plus `{'this': bytes}`.
It is read with a guarded unpickler that turns faiss `Index*` classes into inert holders of those bytes
for `faiss.deserialize_index`: nothing the file names is ever called. faiss and scikit-learn load lazily.
"""
from __future__ import annotations

import os
import pickle
import re
import traceback
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from cluster.units import UnitFileError, load_unit_rows, speaker_unit_files, unit_rows
from core.atomic import write_atomic, write_bytes_atomic
from core.checkpoint import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError
from core.features import list_speakers
from core.pickle_guard import GuardedUnpickler

__all__ = ["INDEX_FILE_NAME", "IndexFileError", "UnsafeIndexFileError", "load_index_file", "n_ivf_lists",
           "retrieve_features", "save_index_file", "save_speaker_indexes", "search_index", "train_index",
           "train_speaker_index"]

PathLike = str | os.PathLike
INDEX_FILE_NAME = "feature_and_index.pkl"
REDUCE_ABOVE = 200_000  # 4.1 replaces larger speakers by 10 000 MiniBatchKMeans centres
REDUCED_CENTRES = 10_000
MIN_DISTANCE = 1e-8  # an exact match (distance 0) would get an infinite weight (NaN in 4.1)
# faiss loads one of several SWIG builds; the pickle names whichever was loaded when it was written.
_FAISS_INDEX_CLASS = re.compile(r"faiss(\.swigfaiss(_\w+)?)?\.Index\w*")


class IndexFileError(CheckpointError):
    """A feature-index file is missing, damaged or not in the 4.1 layout."""


class UnsafeIndexFileError(UnsafeCheckpointError, IndexFileError):
    """The pickle names something other than a faiss index; refused, nothing was executed."""


# --- training ---
def n_ivf_lists(n_rows: int) -> int:
    """Inverted-list count 4.1 uses for `n_rows` vectors: min(⌊16·√N⌋, ⌊N/39⌋)."""
    return min(int(16 * np.sqrt(n_rows)), n_rows // 39)


def train_speaker_index(rows: np.ndarray, speaker: str = "", permutation: np.ndarray | None = None,
                        reduce_above: int = REDUCE_ABOVE, n_centres: int = REDUCED_CENTRES) -> Any:
    """One speaker's `IVF<n>,Flat` index (L2, nprobe 1) of unit rows `[N, C]` in file order, as 4.1 builds it.

    `permutation` is the row order; default `np.random.shuffle` on NumPy's unseeded global RNG, as 4.1 (a
    recorded permutation reproduces an index byte for byte). Above `reduce_above` rows the speaker is
    replaced by `n_centres` k-means centres. Returns a `faiss.IndexIVFFlat`; UnitFileError below 39 rows.
    """
    import faiss

    if permutation is None:
        rows = np.array(rows, dtype=np.float32, order="C")  # a copy: the caller's rows stay in order
        np.random.shuffle(rows)
    else:
        perm = np.asarray(permutation)
        if sorted(perm.tolist()) != list(range(len(rows))):
            raise ValueError(f"permutation is not a permutation of {len(rows)} rows")
        rows = np.ascontiguousarray(np.asarray(rows)[perm], dtype=np.float32)
    if rows.shape[0] > reduce_above:
        from sklearn.cluster import MiniBatchKMeans

        print(f"Trying doing kmeans {rows.shape[0]} shape to {n_centres // 1000}k centers.")
        try:
            km = MiniBatchKMeans(n_clusters=n_centres, verbose=True, batch_size=256 * (os.cpu_count() or 1),
                                 init="random", compute_labels=False)
            rows = np.ascontiguousarray(km.fit(rows).cluster_centers_, dtype=np.float32)
        except Exception:  # same fallback as 4.1: report and index the raw rows
            traceback.print_exc()
    n_rows, dim = rows.shape
    n_ivf = n_ivf_lists(n_rows)
    if n_ivf < 1:
        who = f"Speaker '{speaker}'" if speaker else "This speaker"
        raise UnitFileError(f"{who} has only {n_rows} unit frames; a feature index needs at least 39 "
                            "(under a second of audio). Add more data for this speaker.")
    index = faiss.index_factory(dim, f"IVF{n_ivf},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(rows)
    index.add(rows)  # faiss adds in blocks itself (4.1's batches of 8192 give the same lists)
    return index


def train_index(root_dir: PathLike, spk: Mapping[str, int]) -> dict[int, Any]:
    """Index every speaker of the config's `spk` map (name -> id), in map order; returns `{id: index}`.
    Raises DatasetError (no `root_dir`) or UnitFileError (a speaker without `*.wav.soft.pt` files or frames)."""
    list_speakers(root_dir)  # a missing dataset folder gets its own message
    result: dict[int, Any] = {}
    for name, sid in spk.items():
        print(f"now, index {name} feature...")
        rows = load_unit_rows(speaker_unit_files(Path(root_dir) / name, ".wav.soft.pt"))
        print("The feature index is constructing.")
        result[int(sid)] = train_speaker_index(rows, speaker=name)
        print("Successfully build index")
    return result


def save_index_file(indexes: Mapping[int, Any], path: PathLike) -> None:
    """Write `{speaker_id: faiss index}` as 4.1 does (pickle protocol 4, faiss's own pickling), atomically."""
    data = {int(k): v for k, v in indexes.items()}
    write_atomic(path, lambda f: pickle.dump(data, f, protocol=4))


def save_speaker_indexes(indexes: Mapping[int, Any], folder: PathLike) -> list[Path]:
    """Write each speaker's index as a native faiss file `Index-<speaker id>.index` in `folder` (created if
    missing), the layout MoeVoiceStudio reads; every index is serialised before the first file is written,
    each file atomically. Returns the paths in speaker order."""
    import faiss

    blobs = {int(k): faiss.serialize_index(v).tobytes() for k, v in indexes.items()}
    os.makedirs(folder, exist_ok=True)
    paths = [Path(folder) / f"Index-{k}.index" for k in blobs]
    for path, blob in zip(paths, blobs.values()):
        write_bytes_atomic(path, blob)
    return paths


# --- loading ---
class _PickledIndex:
    """Inert stand-in for a pickled faiss index: keeps the serialised bytes, calls nothing."""

    blob: bytes | None = None

    def __setstate__(self, state: Any) -> None:
        blob = state.get("this") if isinstance(state, dict) and set(state) == {"this"} else None
        if not isinstance(blob, (bytes, bytearray)):
            raise pickle.UnpicklingError("unexpected state for a faiss index: not faiss-serialised bytes")
        self.blob = bytes(blob)


class _IndexUnpickler(GuardedUnpickler):
    """No global at all except faiss `Index*` classes, which become inert placeholders."""

    allowed: ClassVar[dict[tuple[str, str], Any]] = {}

    def refuse(self, module: str, name: str) -> Any:
        if _FAISS_INDEX_CLASS.fullmatch(f"{module}.{name}"):
            return _PickledIndex
        raise UnsafeIndexFileError(f"refused to load: the file would import {module}.{name}, which a faiss "
                                   "feature index never needs. Nothing from the file was executed.")


def load_index_file(path: PathLike) -> dict[int, Any]:
    """Read a `feature_and_index.pkl` safely -> `{speaker_id: faiss index}`. Raises CheckpointNotFoundError,
    UnsafeIndexFileError (the pickle names anything but a faiss index class; nothing executed) or
    IndexFileError (damaged, or not speaker id -> faiss index)."""
    name = str(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"feature index {name} not found; train it with python train_index.py")
    try:
        with open(path, "rb") as f:
            data = _IndexUnpickler(f, name).load()
    except UnsafeIndexFileError as err:
        raise UnsafeIndexFileError(f"{name}: {err}") from None
    except Exception as err:  # truncated or not a pickle at all
        detail = " ".join(str(err).split())[:200]  # some pickle errors span two lines
        raise IndexFileError(f"{name} is not a readable feature index ({type(err).__name__}: {detail})") from None
    if not isinstance(data, dict) or not data:
        raise IndexFileError(f"{name}: expected a dict of speaker id -> faiss index, got {type(data).__name__}")
    import faiss

    out: dict[int, Any] = {}
    for key, value in data.items():
        if not isinstance(key, int) or isinstance(key, bool) or not isinstance(value, _PickledIndex):
            raise IndexFileError(f"{name}: entry {key!r} is not speaker id -> faiss index")
        if value.blob is None:
            raise IndexFileError(f"{name}: entry {key!r} has no serialised faiss data")
        try:
            out[key] = faiss.deserialize_index(np.frombuffer(value.blob, dtype=np.uint8))
        except Exception as err:  # faiss raises RuntimeError with its C++ message
            raise IndexFileError(f"{name}: damaged faiss index data ({str(err).strip()[:200]})") from None
    return out


# --- lookup ---
def search_index(index: Any, units: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k nearest stored vectors of every frame of `units` `[T, C]` (squared L2, the index's nprobe) ->
    (distances float32 `[T, k]`, ids int64 `[T, k]` (-1 where fewer than k were found), vectors float32
    `[T, k, C]`, undefined where the id is -1)."""
    return index.search_and_reconstruct(unit_rows(units, index.d, "the index"), k)


def retrieve_features(index: Any, units: np.ndarray, k: int = 8) -> np.ndarray:
    """Retrieved features for `-fr`: units `[T, C]` -> float32 `[T, C]`.

    Neighbour j weighs `(1/d_j)² / Σ(1/d)²` (d: squared L2 distance, as 4.1), d clamped to >= 1e-8 so an
    exact match dominates instead of giving NaN; missing neighbours (id -1) weigh 0; a frame without
    any neighbour keeps its input value.
    """
    query = unit_rows(units, index.d, "the index")
    dist, ids, vecs = search_index(index, query, k)
    w = (1.0 / np.maximum(dist.astype(np.float64), MIN_DISTANCE)) ** 2
    w[ids < 0] = 0.0
    total = w.sum(axis=1, keepdims=True)
    found = total[:, 0] > 0
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    # faiss fills the vectors of missing neighbours with garbage (NaN): zero weight is not enough
    vecs = np.where((ids >= 0)[..., None], vecs, 0.0)
    out = np.einsum("tk,tkc->tc", w, vecs).astype(np.float32)
    out[~found] = query[~found]
    return out
