"""train_index.py / cluster.feature_index: faiss index training, 4.1's .pkl, safe loading, retrieval."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES

faiss = pytest.importorskip("faiss")

from cluster import UnitFileError, load_cluster_or_index, load_unit_rows, speaker_unit_files  # noqa: E402
from cluster.feature_index import (  # noqa: E402
    IndexFileError,
    UnsafeIndexFileError,
    load_index_file,
    n_ivf_lists,
    retrieve_features,
    save_index_file,
    search_index,
    train_speaker_index,
)

FOLDER = FIXTURES / "cluster"
ATOL = 1e-4


@pytest.fixture(scope="module")
def fx() -> tuple[dict, dict[str, np.ndarray]]:
    if not (FOLDER / "cluster_outputs.npz").exists():
        pytest.skip(f"fixture {FOLDER} not available")
    cases = json.loads((FOLDER / "cluster_cases.json").read_text())
    with np.load(FOLDER / "cluster_outputs.npz") as npz:
        return cases, {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def indexes(fx) -> dict:
    return load_index_file(FOLDER / fx[0]["index"]["pickle"]["file"])


def _speaker_cases(cases: dict) -> dict[int, dict]:
    return {int(k): v for k, v in cases["index"].items() if k.isdigit()}


def _rows(name: str) -> np.ndarray:
    return load_unit_rows(speaker_unit_files(FOLDER / "dataset/44k" / name, ".wav.soft.pt"))


def test_41_pickle_loads(fx, indexes):
    cases, _ = fx
    spk = _speaker_cases(cases)
    assert sorted(indexes) == sorted(spk)
    for sid, meta in spk.items():
        index = indexes[sid]
        assert type(index).__name__ == meta["class"]
        assert (index.d, index.ntotal, index.nlist) == (meta["d"], meta["ntotal"], meta["nlist"])
        assert index.nprobe == meta["nprobe_after_pickle_roundtrip"]
        assert index.metric_type == meta["metric_type"] and index.is_trained == meta["is_trained"]
        assert hashlib.sha256(faiss.serialize_index(index).tobytes()).hexdigest() == meta["serialized_sha256"]


def test_search_matches_41(fx, indexes):
    cases, arr = fx
    for spk, meta in cases["retrieval"]["search"].items():
        sid = next(k for k, v in _speaker_cases(cases).items() if v["speaker_name"] == spk)
        dist, ids, vecs = search_index(indexes[sid], arr[f"query__{spk}"], k=8)
        np.testing.assert_array_equal(ids, arr[meta["ix"]])
        np.testing.assert_allclose(dist, arr[meta["score"]], rtol=1e-5, atol=0)
        stored = indexes[sid].reconstruct_n(0, indexes[sid].ntotal)
        np.testing.assert_array_equal(vecs, stored[ids])


def test_retrieval_mix_matches_svc(fx):
    cases, arr = fx
    spk2id = {v["speaker_name"]: k for k, v in _speaker_cases(cases).items()}
    mixer = load_cluster_or_index(FOLDER / "feature_and_index.pkl")
    assert mixer.kind == "index"
    names = list(cases["retrieval"]["svc_mix"])
    assert len(names) == 4
    for name in names:
        spk, ratio = re.fullmatch(r"svc_retrieval__(.+)__ratio([\d.]+)", name).groups()
        got = mixer.mix(arr[f"query__{spk}"], spk, spk2id[spk], float(ratio))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, arr[name][0].T, atol=ATOL, rtol=0)


def test_exact_match_is_finite(fx, indexes):
    """4.1 gives NaN where a frame equals a stored vector; the clamped weight makes it win."""
    cases, arr = fx
    spk2id = {v["speaker_name"]: k for k, v in _speaker_cases(cases).items()}
    for name, meta in cases["retrieval"]["svc_mix_exact_match"].items():
        spk = re.fullmatch(r"svc_retrieval_exact__(.+)__ratio0\.5", name).group(1)
        query = arr[f"query_exact__{spk}"]
        expected = arr[name][0].T
        got = 0.5 * retrieve_features(indexes[spk2id[spk]], query) + 0.5 * query
        nan_rows = np.isnan(expected).any(axis=1)
        assert np.flatnonzero(nan_rows).tolist() == meta["nan_frames"]
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[~nan_rows], expected[~nan_rows], atol=ATOL, rtol=0)
        index = indexes[spk2id[spk]]
        stored7 = index.reconstruct_n(0, index.ntotal)[7]
        np.testing.assert_array_equal(query[nan_rows][0], stored7)
        np.testing.assert_allclose(got[nan_rows][0], stored7, atol=ATOL, rtol=0)


def test_missing_neighbours_are_dropped(indexes):
    """k larger than the probed list: faiss pads with id -1 (4.1 then mixed in the LAST vector)."""
    index = indexes[0]
    rng = np.random.default_rng(3)
    query = rng.standard_normal((20, index.d)).astype(np.float32)
    k = max(index.invlists.list_size(i) for i in range(index.nlist)) + 1
    dist, ids, vecs = search_index(index, query, k=k)
    assert (ids < 0).any(axis=1).all() and (ids >= 0).any(axis=1).all()
    got = retrieve_features(index, query, k=k)
    stored = index.reconstruct_n(0, index.ntotal)
    for t in range(len(query)):
        ok = ids[t] >= 0
        w = 1.0 / dist[t, ok].astype(np.float64) ** 2
        want = (w[:, None] * stored[ids[t, ok]]).sum(axis=0) / w.sum()
        np.testing.assert_allclose(got[t], want, atol=ATOL, rtol=0)


def test_training_reproduces_41_index_bytes(fx, tmp_path):
    cases, arr = fx
    rebuilt = {}
    for sid, meta in _speaker_cases(cases).items():
        name = meta["speaker_name"]
        rows = _rows(name)
        assert n_ivf_lists(rows.shape[0]) == meta["nlist"]
        index = train_speaker_index(rows, name, permutation=arr[f"index_shuffle_perm__{name}"])
        assert hashlib.sha256(faiss.serialize_index(index).tobytes()).hexdigest() == meta["serialized_sha256"]
        rebuilt[sid] = index
    out = tmp_path / "feature_and_index.pkl"
    save_index_file(rebuilt, out)
    # the whole file, pickle framing included, is what 4.1 wrote
    assert out.read_bytes() == (FOLDER / "feature_and_index.pkl").read_bytes()


def test_default_shuffle_uses_numpy_global_rng(fx):
    """Unseeded like 4.1, but `np.random.seed` before training reproduces a run (as the fixture did)."""
    rows = _rows("spk_a")
    np.random.seed(1234)
    first = faiss.serialize_index(train_speaker_index(rows, "spk_a")).tobytes()
    np.random.seed(1234)
    perm = np.random.permutation(len(rows))
    second = faiss.serialize_index(train_speaker_index(rows, "spk_a", permutation=perm)).tobytes()
    assert first == second
    unshuffled = faiss.serialize_index(train_speaker_index(rows, "spk_a", permutation=np.arange(len(rows))))
    assert unshuffled.tobytes() != first


def test_n_ivf_rule():
    assert [n_ivf_lists(n) for n in (38, 39, 500, 200_000)] == [0, 1, 12, 5128]


def test_train_index_script(fx, tmp_path, monkeypatch, capsys):
    from train_index import main

    # ids swapped against the fixture: the index must follow the config's spk map, not folder order
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/config.json").write_text(json.dumps({"spk": {"spk_b": 0, "spk_a": 1}}))
    shutil.copytree(FOLDER / "dataset", tmp_path / "dataset", copy_function=shutil.copyfile)
    monkeypatch.chdir(tmp_path)
    assert main(["-c", "configs/config.json", "--root_dir", "dataset/44k", "--output_dir", "logs/44k"]) == 0
    out = capsys.readouterr().out
    assert out.count("Successfully build index") == 2 and "now, index spk_b feature..." in out
    loaded = load_index_file(tmp_path / "logs/44k/feature_and_index.pkl")
    assert sorted(loaded) == [0, 1]
    with open(tmp_path / "logs/44k/feature_and_index.pkl", "rb") as f:
        plain = pickle.load(f)  # what 4.1 does
    for sid, name in ((0, "spk_b"), (1, "spk_a")):
        index = loaded[sid]
        assert type(index).__name__ == "IndexIVFFlat" and index.nprobe == 1
        assert (index.ntotal, index.nlist) == (500, 12)
        stored = index.reconstruct_n(0, index.ntotal)
        rows = _rows(name)
        np.testing.assert_array_equal(np.sort(stored, axis=0), np.sort(rows, axis=0))
        assert plain[sid].ntotal == 500
        np.testing.assert_allclose(retrieve_features(index, rows[:5]), rows[:5], atol=ATOL, rtol=0)


def test_script_errors(tmp_path, capsys):
    from train_index import main

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"spk": {"ghost": 0}}))
    assert main(["-c", str(cfg), "--root_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]) == 1
    assert "You need to run preprocess_hubert_f0.py!" in capsys.readouterr().err
    cfg.write_text(json.dumps({"model": {}}))
    assert main(["-c", str(cfg), "--root_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]) == 1
    assert "no spk map" in capsys.readouterr().err
    assert not (tmp_path / "o" / "feature_and_index.pkl").exists()


def test_tiny_speaker():
    with pytest.raises(UnitFileError, match="Speaker 'wee' has only 38 unit frames"):
        train_speaker_index(np.zeros((38, 8), np.float32), "wee")


# ------------------------------------------------------------------------------------------------
# restricted unpickler
# ------------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _assert_refused(path: Path, marker: Path) -> None:
    with pytest.raises(UnsafeIndexFileError, match="refused to load.*Nothing from the file was executed"):
        load_index_file(path)
    with pytest.raises(UnsafeIndexFileError):
        load_cluster_or_index(path)
    assert not marker.exists()


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "feature_and_index.pkl"
    evil.write_bytes(pickle.dumps({0: _Evil(marker)}, protocol=4))
    with pytest.raises(UnsafeIndexFileError, match=r"builtins\.exec"):
        load_index_file(evil)
    assert not marker.exists()
    # hidden behind a real faiss index so that content detection sees "faiss" first
    buf = io.BytesIO()
    pickle.dump({0: faiss.IndexFlatL2(4), 1: _Evil(marker)}, buf, protocol=4)
    evil.write_bytes(buf.getvalue())
    _assert_refused(evil, marker)
    # a faiss-looking name in a module that is not faiss
    evil.write_bytes(pickle.dumps({0: _Evil(marker)}, protocol=4).replace(b"builtins", b"faiss.os"))
    with pytest.raises(UnsafeIndexFileError, match=r"faiss\.os\.exec"):
        load_index_file(evil)
    assert not marker.exists()


def test_bad_index_files(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(IndexFileError, match="expected a dict"):
        load_index_file(path)
    good = (FOLDER / "feature_and_index.pkl").read_bytes()
    path.write_bytes(good[:1000])
    with pytest.raises(IndexFileError):
        load_index_file(path)
    # right class name, wrong state: refused without handing anything to faiss
    forged = pickle.dumps({0: faiss.IndexFlatL2(4)}, protocol=4)
    blob = faiss.serialize_index(faiss.IndexFlatL2(4)).tobytes()
    path.write_bytes(forged.replace(b"this", b"that"))
    with pytest.raises(IndexFileError, match="not faiss-serialised"):
        load_index_file(path)
    path.write_bytes(forged.replace(blob, b"\0" * len(blob)))
    with pytest.raises(IndexFileError, match="damaged faiss index"):
        load_index_file(path)
    with pytest.raises(FileNotFoundError):
        load_index_file(tmp_path / "none.pkl")
