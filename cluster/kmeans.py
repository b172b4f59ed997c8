"""Per-speaker k-means of content units, saved as `kmeans_10000.pt` ({speaker name: centres entry}).

CPU: scikit-learn `KMeans` with library defaults (or `MiniBatchKMeans(batch_size=4096, max_iter=80)`), as
4.1 runs it, imported only then; `--gpu`: `torch_kmeans`, our PyTorch k-means (also runs on CPU).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cluster.units import load_unit_rows, speaker_unit_files
from core.atomic import write_atomic
from core.device import resolve_device
from core.features import DatasetError, list_speakers

__all__ = ["KMEANS_FILE_NAME", "N_CLUSTERS", "TooFewFramesError", "nearest_centre", "torch_kmeans",
           "train_cluster", "train_speaker_kmeans"]

PathLike = str | os.PathLike
N_CLUSTERS = 10000
# 4.1 names the file after its hard-coded cluster count; inference's -cm default points at it.
KMEANS_FILE_NAME = "kmeans_10000.pt"
GPU_N_THREADS = 4  # what 4.1 writes as `_n_threads` for the GPU path (no effect on results)
_CHUNK_ELEMENTS = 1 << 24  # rows x centres per distance block: bounds memory to ~64 MB of float32


class TooFewFramesError(ValueError):
    """A speaker has fewer unit frames than clusters asked for."""


def nearest_centre(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre of every row: x `[N, C]`, centres `[K, C]` -> int64 `[N]`."""
    c_sq = (centres * centres).sum(dim=1)  # [K]; ||x||² is the same for every centre of a row
    step = max(1, _CHUNK_ELEMENTS // max(1, centres.shape[0]))
    out = [torch.argmin(c_sq[None, :] - 2.0 * (x[i:i + step] @ centres.T), dim=1)
           for i in range(0, x.shape[0], step)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++: each new centre is the best of 2 + ln k candidates drawn ∝ squared distance
    (the extra candidates make two centres in one true cluster far less likely)."""
    n = x.shape[0]
    trials = 2 + int(np.log(k))
    chosen = [int(torch.randint(n, (1,), generator=gen, device=x.device).item())]
    d2 = torch.cdist(x[chosen], x).square_()[0]  # squared distance of every row to its nearest centre
    for _ in range(1, k):
        total = d2.sum()
        if float(total) <= 0.0:  # fewer distinct rows than clusters: duplicate centres are unavoidable
            picks = torch.randint(n, (trials,), generator=gen, device=x.device)
        else:
            picks = torch.multinomial(d2 / total, trials, replacement=True, generator=gen)
        cand_d2 = torch.minimum(d2[None, :], torch.cdist(x[picks], x).square_())  # [trials, N]
        best = int(torch.argmin(cand_d2.sum(dim=1)).item())
        chosen.append(int(picks[best]))
        d2 = cand_d2[best]
    return x[chosen]


def torch_kmeans(x: torch.Tensor, n_clusters: int, max_iter: int = 500, tol: float = 1e-2,
                 batch_size: int = 32768, seed: int | None = None) -> torch.Tensor:
    """PyTorch k-means (the `--gpu` path) of rows `x` `[N >= n_clusters, C]` on x's device -> float32 centres
    `[n_clusters, C]`.

    k-means++ on min(N, max(8 * n_clusters, 4096)) sampled rows, then Lloyd updates: plain means when all rows
    fit in one batch, else random mini-batches moving each centre by `0.9 / count + 0.1` (count = 1 + rows it
    has received). Stops after `max_iter` updates or when the summed squared centre shift is <= `tol`; empty
    clusters keep their centre. `seed`: None = nondeterministic.
    """
    n, dim = x.shape
    if n < n_clusters:
        raise TooFewFramesError(f"{n} rows cannot make {n_clusters} clusters")
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed()))
    x = x.float()
    m = min(n, max(8 * n_clusters, 4096))
    sample = x if m == n else x[torch.randperm(n, generator=gen, device=x.device)[:m]]
    centres = _kmeanspp(sample, n_clusters, gen)
    counts = torch.ones(n_clusters, dtype=x.dtype, device=x.device)
    full = batch_size >= n
    for _ in range(max_iter):
        batch = x if full else x[torch.randint(n, (batch_size,), generator=gen, device=x.device)]
        labels = nearest_centre(batch, centres)
        sums = torch.zeros_like(centres).index_add_(0, labels, batch)
        hits = torch.bincount(labels, minlength=n_clusters).to(x.dtype)
        seen = hits > 0
        rate = torch.ones_like(counts) if full else 0.9 / counts + 0.1
        counts += hits
        step = rate[seen, None] * (sums[seen] / hits[seen, None] - centres[seen])
        centres[seen] += step
        if float((step ** 2).sum()) <= tol:  # summed squared centre shift
            break
    return centres


def train_speaker_kmeans(rows: np.ndarray, n_clusters: int = N_CLUSTERS, use_gpu: bool = False,
                         minibatch: bool = False, seed: int | None = None,
                         device: str | None = None) -> dict[str, Any]:
    """k-means of one speaker's unit rows `[N, C]` -> its `kmeans_10000.pt` entry (the three attributes 4.1
    keeps from a fitted KMeans). CPU: scikit-learn, `seed` as `random_state` (None: NumPy's global RNG, as 4.1);
    `use_gpu`: `torch_kmeans` on `device` (None: `core.device.resolve_device`)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if use_gpu:
        x = torch.from_numpy(rows).to(resolve_device(device))
        centres, n_threads = torch_kmeans(x, n_clusters, seed=seed).cpu().numpy(), GPU_N_THREADS
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        model = (MiniBatchKMeans(n_clusters=n_clusters, batch_size=4096, max_iter=80, random_state=seed)
                 if minibatch else KMeans(n_clusters=n_clusters, random_state=seed))
        centres, n_threads = model.fit(rows).cluster_centers_, model._n_threads
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    return {"n_features_in_": int(centres.shape[1]), "_n_threads": int(n_threads), "cluster_centers_": centres}


def train_cluster(dataset: PathLike = "./dataset/44k", output: PathLike = "logs/44k",
                  n_clusters: int = N_CLUSTERS, use_gpu: bool = False, minibatch: bool = False,
                  seed: int | None = None, device: str | None = None,
                  progress: Callable[[list[Path]], Any] | None = None) -> Path:
    """Cluster every speaker folder of `dataset` and write `<output>/kmeans_10000.pt` atomically; returns its path.

    `progress` wraps each speaker's file list (e.g. `tqdm.tqdm`). Raises DatasetError (no dataset folder or
    speaker), UnitFileError (a speaker without `*.soft.pt` files, an unreadable unit file) or TooFewFramesError.
    """
    speakers = list_speakers(dataset)
    if not speakers:
        raise DatasetError(f"no speaker folders in {os.fspath(dataset)}: run python resample.py and "
                           "preprocess_hubert_f0.py first")
    files_of = {spk: speaker_unit_files(Path(dataset) / spk, ".soft.pt") for spk in speakers}
    for spk, files in files_of.items():  # fail fast, before hours of clustering, on any unusable speaker
        n_frames = load_unit_rows(files).shape[0]
        if n_frames < n_clusters:  # ~50 unit frames per second of audio (hop 320 at 16 kHz)
            raise TooFewFramesError(
                f"Speaker '{spk}' has only {n_frames} unit frames; k-means with {n_clusters} clusters needs "
                f"at least {n_clusters} (≈{n_clusters / 50:.0f} s). Use feature retrieval or more data.")
    result: dict[str, dict[str, Any]] = {}
    for spk, files in files_of.items():  # one speaker's rows in memory at a time
        print(f"train kmeans for {spk}...")
        rows = load_unit_rows(progress(files) if progress else files)
        print(f"{len(files)} {rows.nbytes / 1024 ** 2} MB , shape: {rows.shape} {rows.dtype}")
        start = time.time()
        result[spk] = train_speaker_kmeans(rows, n_clusters, use_gpu=use_gpu, minibatch=minibatch,
                                           seed=seed, device=device)
        print(f"{time.time() - start} s")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / KMEANS_FILE_NAME
    write_atomic(path, lambda f: torch.save(result, f))
    print("end")
    return path
