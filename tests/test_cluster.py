"""cluster/: k-means lookup against 4.1's recorded results, kmeans_10000.pt layout, training scripts."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, ROOT

import cluster
from cluster import ClusterFileError, ClusterModel, load_cluster_or_index, load_unit_rows, speaker_unit_files
from cluster.kmeans import TooFewFramesError, torch_kmeans, train_cluster
from core.checkpoint import UnsafeCheckpointError

FOLDER = FIXTURES / "cluster"
ATOL = 1e-4  # fixtures README default for features


@pytest.fixture(scope="module")
def fx() -> tuple[dict, dict[str, np.ndarray]]:
    if not (FOLDER / "cluster_outputs.npz").exists():
        pytest.skip(f"fixture {FOLDER} not available")
    cases = json.loads((FOLDER / "cluster_cases.json").read_text())
    with np.load(FOLDER / "cluster_outputs.npz") as npz:
        return cases, {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def model(fx) -> dict[str, ClusterModel]:
    return cluster.get_cluster_model(FOLDER / fx[0]["kmeans"]["file"])


def _speakers(cases: dict) -> list[str]:
    return [k for k in cases["lookup"] if k != "svc_mix"]


def test_kmeans_file_layout(fx, model):
    cases, _ = fx
    raw = torch.load(FOLDER / cases["kmeans"]["file"], map_location="cpu", weights_only=False)
    assert sorted(model) == sorted(cases["kmeans"]["structure"])
    for spk, entry in cases["kmeans"]["structure"].items():
        m = model[spk]
        assert m.n_features_in_ == entry["n_features_in_"]["value"]
        assert m._n_threads == entry["_n_threads"]["value"]
        assert list(m.cluster_centers_.shape) == entry["cluster_centers_"]["shape"]
        assert m.cluster_centers_.dtype == np.float32
        np.testing.assert_array_equal(m.cluster_centers_, raw[spk]["cluster_centers_"])


def test_lookup_matches_41(fx, model):
    cases, arr = fx
    for spk in _speakers(cases):
        q = arr[f"query__{spk}"]
        labels = cluster.get_cluster_result(model, q, spk)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, arr[f"lookup__labels__{spk}"])
        np.testing.assert_allclose(cluster.get_cluster_center_result(model, q, spk),
                                   arr[f"lookup__centers__{spk}"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(cluster.get_center(model, labels, spk),
                                   arr[f"lookup__get_center__{spk}"], atol=ATOL, rtol=0)
        # a torch tensor works the same as an array (inference holds units as tensors)
        np.testing.assert_array_equal(cluster.get_cluster_result(model, torch.from_numpy(q), spk), labels)


def test_cluster_mix_matches_svc(fx):
    cases, arr = fx
    mixer = load_cluster_or_index(FOLDER / cases["kmeans"]["file"])
    assert mixer.kind == "kmeans"
    names = list(cases["lookup"]["svc_mix"])
    assert len(names) == 4
    for name in names:
        spk, ratio = re.fullmatch(r"svc_cluster__(.+)__ratio([\d.]+)", name).groups()
        expected = arr[name][0].T  # [T, C]
        units = torch.from_numpy(arr[f"query__{spk}"])
        got = mixer.mix(units, spk, -1, float(ratio))  # k-means is keyed by name only
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, atol=ATOL, rtol=0)


def test_lookup_errors(model):
    x = np.zeros((3, 768), np.float32)
    with pytest.raises(ClusterFileError, match=r"Speaker 'nobody'.*available: spk_a, spk_b"):
        cluster.get_cluster_result(model, x, "nobody")
    with pytest.raises(ClusterFileError, match="256-dim|768-dim"):
        cluster.get_cluster_result(model, np.zeros((3, 256), np.float32), "spk_a")


def test_near_tie_resolved_exactly():
    # two centres whose float32 score difference is below float32 resolution at this magnitude
    centres = np.array([[1000.0, 0.0], [1000.0, 1e-3]], np.float32)
    m = ClusterModel(centres)
    x = np.array([[1000.0, 0.0006], [1000.0, 0.0004]], np.float32)
    np.testing.assert_array_equal(m.predict(x), [1, 0])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_kmeans_file_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "kmeans_10000.pt"
    torch.save({"spk": {"cluster_centers_": _Evil(marker)}}, path)
    with pytest.raises(UnsafeCheckpointError):
        cluster.get_cluster_model(path)
    with pytest.raises(UnsafeCheckpointError):
        load_cluster_or_index(path)
    assert not marker.exists()


def test_detect_by_content(fx, tmp_path):
    cases, _ = fx
    swapped_pt = tmp_path / "feature_and_index.pt"  # a .pkl named .pt and vice versa
    swapped_pkl = tmp_path / "kmeans_10000.pkl"
    shutil.copyfile(FOLDER / "feature_and_index.pkl", swapped_pt)
    shutil.copyfile(FOLDER / cases["kmeans"]["file"], swapped_pkl)
    assert cluster.detect_cluster_file(swapped_pt) == "index"
    assert cluster.detect_cluster_file(swapped_pkl) == "kmeans"
    assert load_cluster_or_index(swapped_pkl).kind == "kmeans"
    legacy = tmp_path / "legacy.pt"
    torch.save({"spk_a": {"n_features_in_": 2, "_n_threads": 1,
                          "cluster_centers_": np.eye(2, dtype=np.float32)}}, legacy, _use_new_zipfile_serialization=False)
    mixer = load_cluster_or_index(legacy)
    assert mixer.kind == "kmeans"
    np.testing.assert_array_equal(mixer.target(np.array([[0.9, 0.2]], np.float32), "spk_a", 0), [[1.0, 0.0]])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ClusterFileError, match="neither a k-means file"):
        load_cluster_or_index(junk)
    with pytest.raises(FileNotFoundError):
        load_cluster_or_index(tmp_path / "missing.pt")


def test_inference_lookup_avoids_heavy_imports():
    code = ("import sys, cluster, numpy as np\n"
            f"m = cluster.load_cluster_or_index({str(FOLDER / 'kmeans_8.pt')!r})\n"
            "m.target(np.zeros((2, 768), np.float32), 'spk_a', 0)\n"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('sklearn', 'faiss')]\n"
            "assert not bad, bad\n")
    if not (FOLDER / "kmeans_8.pt").exists():
        pytest.skip("fixture missing")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def _matched_error(ref: np.ndarray, got: np.ndarray) -> tuple[int, float]:
    """(distinct matches, max abs error) pairing each reference centre with its nearest trained one."""
    d = ((ref[:, None, :] - got[None, :, :]) ** 2).sum(-1)
    pick = d.argmin(axis=1)
    return len(set(pick.tolist())), float(np.abs(ref - got[pick]).max())


def _check_layout(path: Path, speakers: list[str], n_clusters: int, n_threads: int | None) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=False)  # exactly how 4.1 reads it
    assert list(data) == speakers
    for entry in data.values():
        assert list(entry) == ["n_features_in_", "_n_threads", "cluster_centers_"]
        assert type(entry["n_features_in_"]) is int and entry["n_features_in_"] == 768
        assert type(entry["_n_threads"]) is int
        if n_threads is not None:
            assert entry["_n_threads"] == n_threads
        c = entry["cluster_centers_"]
        assert isinstance(c, np.ndarray) and c.dtype == np.float32 and c.shape == (n_clusters, 768)
    return data


@pytest.mark.parametrize("gpu", [False, True], ids=["sklearn", "torch"])
def test_train_cluster_script(fx, model, tmp_path, monkeypatch, capsys, gpu):
    from cluster.train_cluster import main

    dataset = tmp_path / "dataset" / "44k"
    for spk in model:
        (dataset / spk).mkdir(parents=True)
        for f in speaker_unit_files(FOLDER / "dataset" / "44k" / spk):
            shutil.copyfile(f, dataset / spk / f.name)
    (dataset / ".ipynb_checkpoints").mkdir()  # hidden folders are not speakers
    shutil.copyfile(FOLDER / "dataset/44k/spk_a/clip0.wav.soft.pt", dataset / ".ipynb_checkpoints/x.wav.soft.pt")
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "dataset/44k", "--output", "logs/44k", "--n_clusters", "8", "--seed", "0"]
    assert main(argv + (["--gpu"] if gpu else [])) == 0
    assert "train kmeans for spk_a..." in capsys.readouterr().out
    data = _check_layout(tmp_path / "logs/44k/kmeans_10000.pt", ["spk_a", "spk_b"], 8, 4 if gpu else None)
    # Well-separated synthetic clusters: both k-means find 4.1's partition, so the centres are the
    # same cluster means up to order.
    for spk, entry in data.items():
        n, err = _matched_error(model[spk].cluster_centers_, entry["cluster_centers_"])
        assert n == 8 and err < ATOL, (spk, n, err)


def test_torch_kmeans_minibatch(model):
    rows = torch.from_numpy(load_unit_rows(speaker_unit_files(FOLDER / "dataset/44k/spk_b")))
    centres = torch_kmeans(rows, 8, batch_size=128, max_iter=60, seed=1).numpy()
    n, err = _matched_error(model["spk_b"].cluster_centers_, centres)
    # mini-batch updates keep a 0.1 learning-rate floor, so centres hover near the means
    assert n == 8 and err < 0.3, (n, err)


def test_too_few_frames(fx, tmp_path, capsys):
    from cluster.train_cluster import main

    out = tmp_path / "out"
    assert main(["--dataset", str(FOLDER / "dataset/44k"), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Speaker 'spk_a' has only 500 unit frames" in err and "at least 10000" in err
    assert not (out / "kmeans_10000.pt").exists()
    with pytest.raises(TooFewFramesError, match="has only 500 unit frames"):
        train_cluster(FOLDER / "dataset/44k", out, n_clusters=501)


def test_speaker_without_units(tmp_path, capsys):
    from cluster.train_cluster import main

    (tmp_path / "ds" / "empty_spk").mkdir(parents=True)
    assert main(["--dataset", str(tmp_path / "ds"), "--output", str(tmp_path / "o")]) == 1
    assert "no *.soft.pt files" in capsys.readouterr().err


def test_script_runs_from_root(tmp_path):
    """`python cluster/train_cluster.py --help` works as the tutorial runs it (repo root not on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "cluster/train_cluster.py", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--gpu" in res.stdout
