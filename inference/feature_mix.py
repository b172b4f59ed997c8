"""Seam between the converter and `cluster/`: k-means and feature-retrieval mixing of units (`-cr`).

The converter only sees a `UnitMixer`: `mix(units [T, C], speaker name, speaker id, ratio)` returns
`ratio * target + (1 - ratio) * units` (pipeline.md §7.5 step 4), where the target is the nearest
k-means centre (file keyed by speaker name) or the retrieved features (index keyed by speaker id).
`load_unit_mixer` gets one from `cluster.load_cluster_or_index`, which decides by the file's content
(quirk 47); `cluster` is imported only when a file is actually loaded.
"""
from __future__ import annotations

import logging
import os
from typing import Protocol

import numpy as np

__all__ = ["UnitMixer", "load_unit_mixer"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike


class UnitMixer(Protocol):
    kind: str  # "kmeans" or "index"
    path: str

    def mix(self, units: np.ndarray, speaker: str, speaker_id: int, ratio: float) -> np.ndarray:
        """units float32 [T, C] -> ratio * target + (1 - ratio) * units, float32 [T, C]."""
        ...


def load_unit_mixer(path: PathLike, feature_retrieval: bool) -> UnitMixer:
    """Load `path` as what it contains; warn when that disagrees with `-fr` (4.1 crashed, quirk 47).

    Raises:
        FileNotFoundError: no such file.
        cluster.ClusterFileError (a CheckpointError): neither kind, or damaged.
    """
    from cluster import load_cluster_or_index

    if not os.path.isfile(path):
        raise FileNotFoundError(f"cluster / index file {os.fspath(path)} not found")
    mixer = load_cluster_or_index(path)
    if mixer.kind == "index" and not feature_retrieval:
        logger.warning("%s is a feature-retrieval index: using feature retrieval (as with -fr)", path)
    elif mixer.kind == "kmeans" and feature_retrieval:
        logger.warning("%s is a k-means model, not a feature index: using k-means clustering (without -fr)", path)
    return mixer
