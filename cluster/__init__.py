"""Timbre clustering and feature retrieval: the unit-file reader of both trainings and the `-cm` file at
inference (`-cr`, `-fr`). A `kmeans_10000.pt` holds k-means centres keyed by speaker *name*, a
`feature_and_index.pkl` faiss indexes keyed by speaker *id*. `ClusterModel.predict` is scikit-learn's, in
NumPy: inference never imports scikit-learn.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np
import torch

from cluster.units import ClusterFileError, UnitFileError, load_unit_rows, speaker_unit_files, unit_rows
from core.checkpoint import CheckpointNotFoundError, safe_torch_load

__all__ = ["ClusterFileError", "ClusterModel", "UnitFileError", "UnitMixer", "detect_cluster_file", "get_center",
           "get_cluster_center_result", "get_cluster_model", "get_cluster_result", "load_cluster_or_index",
           "load_unit_rows", "speaker_unit_files", "unit_rows"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
ArrayLike = np.ndarray | torch.Tensor
# torch's legacy (non-zip) format opens with a protocol-2 pickle of a long magic number
_TORCH_LEGACY_PREFIX = b"\x80\x02\x8a\x0a"
_ROWS_PER_BLOCK = 2048  # bounds the [rows, centres] distance block (~80 MB with 10 000 centres)


class ClusterModel:
    """One speaker's k-means centres under scikit-learn's attribute names (the stored layout):
    `cluster_centers_` float32 `[K, C]`, `n_features_in_` C, `_n_threads` (kept to write the file back)."""

    def __init__(self, cluster_centers_: np.ndarray, n_features_in_: int | None = None,
                 _n_threads: int = 1) -> None:
        centres = np.ascontiguousarray(cluster_centers_, dtype=np.float32)
        if centres.ndim != 2 or centres.shape[0] < 1:
            raise ClusterFileError(f"cluster_centers_ must be [K, C], got shape {centres.shape}")
        self.cluster_centers_ = centres
        self.n_features_in_ = int(n_features_in_ if n_features_in_ is not None else centres.shape[1])
        self._n_threads = int(_n_threads)
        self._sq = (centres.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Index of the nearest centre of every row of `x` `[T, C]`; int32 `[T]`. The two best float32
        candidates are compared again in float64, so near-ties resolve as an exact computation would."""
        rows = unit_rows(x, self.n_features_in_, "the cluster model")
        centres = self.cluster_centers_
        labels = np.empty(rows.shape[0], dtype=np.int32)
        k = min(2, centres.shape[0])
        for start in range(0, rows.shape[0], _ROWS_PER_BLOCK):
            block = rows[start:start + _ROWS_PER_BLOCK]
            score = self._sq[None, :] - 2.0 * (block @ centres.T)  # ||x||² dropped
            cand = np.argpartition(score, k - 1, axis=1)[:, :k] if k > 1 else np.zeros((len(block), 1), int)
            diff = block[:, None, :].astype(np.float64) - centres[cand].astype(np.float64)
            exact = (diff ** 2).sum(axis=2)  # [rows, k]
            labels[start:start + len(block)] = cand[np.arange(len(block)), exact.argmin(axis=1)]
        return labels


def get_cluster_model(ckpt_path: PathLike) -> dict[str, ClusterModel]:
    """Load `kmeans_10000.pt` (weights-only, NumPy arrays allowed) as speaker name -> ClusterModel."""
    data = safe_torch_load(ckpt_path, allow_numpy=True)
    if not isinstance(data, Mapping) or not data:
        raise ClusterFileError(f"{ckpt_path}: expected a dict of speaker -> k-means entry, "
                               f"got {type(data).__name__}")
    models: dict[str, ClusterModel] = {}
    for spk, entry in data.items():
        if not isinstance(entry, Mapping) or "cluster_centers_" not in entry:
            raise ClusterFileError(f"{ckpt_path}: entry {spk!r} has no cluster_centers_ (not a k-means file)")
        models[str(spk)] = ClusterModel(entry["cluster_centers_"], entry.get("n_features_in_"),
                                        entry.get("_n_threads", 1))
    return models


def _model_of(model: Mapping[str, ClusterModel], speaker: str) -> ClusterModel:
    if speaker not in model:
        raise ClusterFileError(f"Speaker '{speaker}' is not in the cluster model (available: {', '.join(model)})")
    return model[speaker]


def get_cluster_result(model: Mapping[str, ClusterModel], x: ArrayLike, speaker: str) -> np.ndarray:
    """Nearest-centre label of every frame of `x` `[T, C]` for `speaker`; int32 `[T]`."""
    return _model_of(model, speaker).predict(x)


def get_cluster_center_result(model: Mapping[str, ClusterModel], x: ArrayLike, speaker: str) -> np.ndarray:
    """The nearest centre of every frame of `x` `[T, C]`; float32 `[T, C]`."""
    m = _model_of(model, speaker)
    return m.cluster_centers_[m.predict(x)]


def get_center(model: Mapping[str, ClusterModel], x: ArrayLike, speaker: str) -> np.ndarray:
    """Centres of the given labels `x` `[T]`; float32 `[T, C]`."""
    return _model_of(model, speaker).cluster_centers_[np.asarray(x)]


def detect_cluster_file(path: PathLike) -> Literal["kmeans", "index"]:
    """Tell a k-means `.pt` (a zip, or a legacy torch pickle) from a feature-index `.pkl` (a raw pickle
    naming a faiss class) by content, not by name or `-fr`; CheckpointNotFoundError / ClusterFileError."""
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"cluster/index file {path} not found")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] in (b"PK\x03\x04", _TORCH_LEGACY_PREFIX):
        return "kmeans"
    if head[:1] == b"\x80" and b"faiss" in head:
        return "index"
    raise ClusterFileError(f"{path} is neither a k-means file (kmeans_10000.pt from cluster/train_cluster.py) "
                           "nor a feature index (feature_and_index.pkl from train_index.py)")


@dataclass
class UnitMixer:
    """A loaded `-cm` file: `kind` "kmeans" (models keyed by speaker name) or "index" (faiss indexes
    keyed by speaker id), the `path` it came from and its `models`."""

    kind: Literal["kmeans", "index"]
    path: str
    models: dict[Any, Any]

    def target(self, units: ArrayLike, speaker: str, speaker_id: int) -> np.ndarray:
        """Cluster centres or retrieved features for `units` `[T, C]`; float32 `[T, C]`."""
        if self.kind == "kmeans":
            return get_cluster_center_result(self.models, units, speaker)
        if speaker_id not in self.models:
            raise ClusterFileError(f"{self.path} has no index for speaker '{speaker}' (id {speaker_id}); "
                                   f"it holds ids {sorted(self.models)} — rebuild it with train_index.py")
        from cluster.feature_index import retrieve_features

        return retrieve_features(self.models[speaker_id], units)

    def mix(self, units: ArrayLike, speaker: str, speaker_id: int, ratio: float) -> ArrayLike:
        """`ratio * target + (1 - ratio) * units` (the `-cr` blend) of `units` `[T, C]`, same type and dtype."""
        target = self.target(units, speaker, speaker_id)
        if isinstance(units, torch.Tensor):
            return ratio * torch.from_numpy(target).to(units) + (1 - ratio) * units
        return (ratio * target + (1 - ratio) * units).astype(units.dtype)


def load_cluster_or_index(path: PathLike, feature_retrieval: bool | None = None) -> UnitMixer:
    """Load a `kmeans_10000.pt` or `feature_and_index.pkl`, whichever `path` contains; `feature_retrieval`
    (`-fr`; None: no check) only warns when the file is of the other kind. Raises CheckpointNotFoundError, or
    ClusterFileError / IndexFileError / UnsafeIndexFileError for a file of neither kind, damaged or refused.
    """
    kind = detect_cluster_file(path)
    if kind == "index" and feature_retrieval is False:
        logger.warning("%s is a feature-retrieval index: using feature retrieval (as with -fr)", path)
    elif kind == "kmeans" and feature_retrieval:
        logger.warning("%s is a k-means model, not a feature index: using k-means clustering (without -fr)", path)
    if kind == "kmeans":
        return UnitMixer("kmeans", str(path), dict(get_cluster_model(path)))
    from cluster.feature_index import load_index_file

    return UnitMixer("index", str(path), load_index_file(path))
