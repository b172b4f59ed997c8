"""onnx_export.py --diffusion (the four MoeVoiceStudio graphs) and export_index_for_onnx.py.

The diffusion graphs are exported from the 4.1 fixture model (2 speakers) and from the same weights as a
one-speaker model, then driven in ONNX Runtime the way MoeVS drives them: the encoder, then PNDM over the
strided steps with denoise / pred (two denoiser calls on the first step, Adams-Bashforth after), then after.
The start is the client's q_sample of the normalised mel at k_step - 1 with a given noise; the result must be
our PyTorch shallow diffusion (method pndm) on that noise, and with zero noise 4.1's recorded output.
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import faiss
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

import export_index_for_onnx
import onnx_export
from cluster.feature_index import load_index_file, save_index_file, train_speaker_index
from conftest import FIXTURES, load_npz
from diffusion.unit2mel import load_diffusion_model
from export.diffusion_onnx import GRAPHS

pytestmark = pytest.mark.usefixtures("single_thread")

DIFF = FIXTURES / "diffusion"
MEL_TOL = 1e-4


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _model_folder(root: Path, name: str, n_spk: int) -> Path:
    """checkpoints/<name>/diffusion/{model.pt, config.yaml}: the fixture model, or its weights without the
    speaker table as a one-speaker model."""
    source = root / name / "diffusion"
    source.mkdir(parents=True)
    cfg = yaml.safe_load((DIFF / "saver_config.yaml").read_text())
    ckpt = torch.load(DIFF / "model_2000.pt", map_location="cpu", weights_only=True)
    if n_spk == 1:
        cfg["model"]["n_spk"], cfg["spk"] = 1, {"solo": 0}
        ckpt["model"] = {k: v for k, v in ckpt["model"].items() if k != "spk_embed.weight"}
    (source / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.save(ckpt, source / "model.pt")
    return source


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    if not (DIFF / "model_2000.pt").exists():
        pytest.skip("diffusion fixture not available")
    root = tmp_path_factory.mktemp("checkpoints")
    out: dict = {"root": root, "case": load_npz(DIFF / "diffusion_cases.npz")}
    for name, n_spk in (("duo", 2), ("solo", 1)):
        source = _model_folder(root, name, n_spk)
        assert onnx_export.main(["--diffusion", "-n", name, "--checkpoints_dir", str(root)]) == 0
        out[name] = {g: _session(root / name / f"{name}_{g}.onnx") for g in GRAPHS}
        out[name + "_model"] = load_diffusion_model(source / "model.pt", "cpu", source / "config.yaml")[0]
    return out


def moevs_shallow(s: dict, feeds: dict[str, np.ndarray], mel: np.ndarray, noise: np.ndarray, k_step: int,
                  speedup: int, sqrt_abar: np.ndarray, sqrt_1m_abar: np.ndarray) -> np.ndarray:
    """MoeVS's shallow diffusion over the exported graphs (numpy + ONNX Runtime only): mel [1, T, M] -> [1, M, T]."""
    names = [i.name for i in s["encoder"].get_inputs()]
    cond = s["encoder"].run(["mel_pred"], {n: feeds[n] for n in names})[0]

    def denoise(x: np.ndarray, t: int) -> np.ndarray:
        return s["denoise"].run(None, {"noise": x, "time": np.array([t]), "condition": cond})[0]

    def pred(x: np.ndarray, eps: np.ndarray, t: int, p: int) -> np.ndarray:
        return s["pred"].run(None, {"noise": x, "noise_pred": eps, "time": np.array([t]),
                                    "time_prev": np.array([p])})[0]

    norm = ((mel - -12.0) / (2.0 - -12.0) * 2 - 1).transpose(0, 2, 1)[:, None].astype(np.float32)
    x = sqrt_abar[k_step - 1] * norm + sqrt_1m_abar[k_step - 1] * noise
    history: list[np.ndarray] = []  # earlier noise estimates, newest last (MoeVS keeps up to 4 with the current)
    for t in range(k_step - speedup, -1, -speedup):
        p = max(t - speedup, 0)
        eps = denoise(x, t)
        if not history:
            mixed = (denoise(pred(x, eps, t, p), p) + eps) / 2
        elif len(history) == 1:
            mixed = (3 * eps - history[-1]) / 2
        elif len(history) == 2:
            mixed = (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            mixed = (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history = (history + [eps])[-3:]
        x = pred(x, mixed, t, p)
    return s["after"].run(["mel_out"], {"x": x})[0]


def _run_both(exported: dict, name: str, spk_mix: np.ndarray | None, torch_speaker: dict, k_step: int,
              speedup: int, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ONNX Runtime mel [1, T, M], PyTorch pndm mel [1, T, M]) for the fixture inputs and this noise."""
    case, model = exported["case"], exported[name + "_model"]
    feeds = {"hubert": case["in_units"], "mel2ph": np.arange(1, case["in_units"].shape[1] + 1)[None],
             "f0": case["in_f0"][..., 0], "volume": case["in_volume"][..., 0], "spk_mix": spk_mix}
    decoder = model.decoder
    onnx_mel = moevs_shallow(exported[name], feeds, case["in_gt_spec"], noise, k_step, speedup,
                             decoder.sqrt_alphas_cumprod.numpy(), decoder.sqrt_one_minus_alphas_cumprod.numpy())
    with torch.no_grad():
        ref = model(torch.from_numpy(case["in_units"]), torch.from_numpy(case["in_f0"]),
                    torch.from_numpy(case["in_volume"]), gt_spec=torch.from_numpy(case["in_gt_spec"]),
                    infer_speedup=speedup, method="pndm", k_step=k_step, use_tqdm=False,
                    noise_fn=lambda x: torch.from_numpy(noise), **torch_speaker)
    return onnx_mel.transpose(0, 2, 1), ref.numpy()


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == np.float32
    return float(np.abs(a.astype(np.float64) - b).max())


# -- graph files -----------------------------------------------------------------------------------
def test_graph_interfaces(exported) -> None:
    def spec(path: Path) -> tuple[list, list]:
        graph = onnx.load(str(path))
        assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [16]
        dims = lambda vs: [(v.name, v.type.tensor_type.elem_type,  # noqa: E731
                            [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in vs]
        return dims(graph.graph.input), [o.name for o in graph.graph.output]

    root, f, i = exported["root"], onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    assert sorted(p.name for p in (root / "duo").iterdir()) == ["diffusion"] + [f"duo_{g}.onnx" for g in sorted(GRAPHS)]
    mix_inputs = [("hubert", f, [1, "hubert_dynamic_axes_1", 768]), ("mel2ph", i, [1, "mel2ph_dynamic_axes_1"]),
                  ("f0", f, [1, "f0_dynamic_axes_1"]), ("volume", f, [1, "volume_dynamic_axes_1"]),
                  ("spk_mix", f, ["spk_mix_dynamic_axes_1", 2])]
    assert spec(root / "duo" / "duo_encoder.onnx") == (mix_inputs, ["mel_pred"])
    # One speaker: the graph never reads spk_mix, so it has no such input (MoeVS feeds the first four).
    assert spec(root / "solo" / "solo_encoder.onnx") == (mix_inputs[:4], ["mel_pred"])
    x = [1, 1, 128, "noise_dynamic_axes_1"]
    assert spec(root / "duo" / "duo_denoise.onnx") == (
        [("noise", f, x), ("time", i, [1]), ("condition", f, [1, 32, "condition_dynamic_axes_1"])], ["noise_pred"])
    assert spec(root / "duo" / "duo_pred.onnx") == (
        [("noise", f, x), ("noise_pred", f, [1, 1, 128, "noise_pred_dynamic_axes_1"]), ("time", i, [1]),
         ("time_prev", i, [1])], ["noise_pred_o"])
    assert spec(root / "duo" / "duo_after.onnx") == ([("x", f, [1, 1, 128, "x_dynamic_axes_1"])], ["mel_out"])


def test_encoder_spreads_units_by_mel2ph(exported) -> None:
    """Fewer units than frames, repeated and zero (no unit) entries of mel2ph; a per-frame speaker mix."""
    gen = np.random.default_rng(3)
    units = gen.standard_normal((1, 7, 768)).astype(np.float32)
    mel2ph = np.array([[0, 1, 1, 2, 3, 3, 3, 4, 5, 6, 7, 7, 0]])
    frames = mel2ph.shape[1]
    f0 = (gen.random((1, frames)) * 400 + 60).astype(np.float32)
    volume = gen.random((1, frames)).astype(np.float32)
    w = np.linspace(0, 1, frames, dtype=np.float32)[:, None]
    spk_mix = np.concatenate([1 - w, w], axis=1)
    got = exported["duo"]["encoder"].run(None, {"hubert": units, "mel2ph": mel2ph, "f0": f0, "volume": volume,
                                                "spk_mix": spk_mix})[0]
    model = exported["duo_model"]
    model.init_spkmix(2)
    spread = np.concatenate([np.zeros((1, 1, 768), np.float32), units], axis=1)[:, mel2ph[0]]
    with torch.no_grad():
        ref = model.embed(torch.from_numpy(spread), torch.from_numpy(f0)[..., None],
                          torch.from_numpy(volume)[..., None], spk_id=torch.from_numpy(spk_mix))
    assert got.shape == (1, 32, frames)
    assert _max_err(got, ref.transpose(1, 2).numpy()) < 1e-5


# -- MoeVS's PNDM loop against PyTorch ------------------------------------------------------------
@pytest.mark.parametrize(("k_step", "speedup"), [(20, 10), (100, 10)])
def test_zero_noise_reproduces_41_pndm(exported, k_step: int, speedup: int) -> None:
    """Speaker 1 as a one-hot mix, zero noise: 4.1's recorded pndm output and our PyTorch path."""
    frames = exported["case"]["in_units"].shape[1]
    one_hot = np.tile(np.array([[0.0, 1.0]], np.float32), (frames, 1))
    onnx_mel, ref = _run_both(exported, "duo", one_hot, {"spk_id": torch.tensor([[1]])}, k_step, speedup,
                              np.zeros((1, 1, 128, frames), np.float32))
    assert _max_err(onnx_mel, ref) < MEL_TOL
    assert _max_err(onnx_mel, exported["case"][f"out__pndm_k{k_step}"]) < MEL_TOL


@pytest.mark.parametrize(("name", "k_step", "speedup"), [("duo", 100, 10), ("duo", 60, 20), ("solo", 100, 10)])
def test_noise_and_speaker_mix_match_pytorch(exported, name: str, k_step: int, speedup: int) -> None:
    frames = exported["case"]["in_units"].shape[1]
    noise = np.random.default_rng(k_step).standard_normal((1, 1, 128, frames)).astype(np.float32)
    if name == "solo":
        onnx_mel, ref = _run_both(exported, name, None, {}, k_step, speedup, noise)
        assert _max_err(onnx_mel, ref) < MEL_TOL
        return
    # The same 30/70 mix in every frame (PyTorch: spk_mix_dict), then weights that change per frame
    # (PyTorch: the per-frame table after init_spkmix, as Svc's -usm does).
    mix = np.tile(np.array([[0.3, 0.7]], np.float32), (frames, 1))
    onnx_mel, ref = _run_both(exported, name, mix, {"spk_mix_dict": {0: 0.3, 1: 0.7}}, k_step, speedup, noise)
    assert _max_err(onnx_mel, ref) < MEL_TOL
    w = np.linspace(0, 1, frames, dtype=np.float32)[:, None]
    per_frame = np.concatenate([1 - w, w], axis=1)
    exported["duo_model"].init_spkmix(2)
    onnx_mel, ref_frames = _run_both(exported, name, per_frame, {"spk_id": torch.from_numpy(per_frame)}, k_step,
                                     speedup, noise)
    assert _max_err(onnx_mel, ref_frames) < MEL_TOL
    assert np.abs(ref_frames - ref).max() > 1e-3  # the two mixes really differ


# -- diffusion export errors ------------------------------------------------------------------------
def _fails(argv: list[str], capsys, script=onnx_export) -> str:
    assert script.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_diffusion_export_errors_leave_nothing(tmp_path, capsys) -> None:
    root = tmp_path / "checkpoints"
    args = ["--diffusion", "-n", "duo", "--checkpoints_dir", str(root)]
    assert "duo not found" in _fails(args, capsys)
    (root / "duo").mkdir(parents=True)
    err = _fails(args, capsys)
    assert "diffusion model" in err and "model.pt" in err
    source = _model_folder(tmp_path / "other", "duo", 2)
    shutil.copytree(source, root / "duo" / "diffusion")
    (root / "duo" / "diffusion" / "config.yaml").unlink()
    assert "config.yaml" in _fails(args, capsys)
    shutil.copyfile(source / "config.yaml", root / "duo" / "diffusion" / "config.yaml")
    (root / "duo" / "duo_encoder.onnx").mkdir()  # the first file cannot be written
    assert "duo_encoder.onnx" in _fails(args, capsys)
    assert sorted(p.name for p in (root / "duo").iterdir()) == ["diffusion", "duo_encoder.onnx"]
    (root / "duo" / "duo_encoder.onnx").rmdir()
    (root / "duo" / "diffusion" / "model.pt").write_bytes(b"not a checkpoint")
    _fails(args, capsys)
    assert sorted(p.name for p in (root / "duo").iterdir()) == ["diffusion"]


# -- export_index_for_onnx.py ---------------------------------------------------------------------
def test_index_export_answers_like_the_pkl(tmp_path, capsys) -> None:
    gen = np.random.default_rng(5)
    pkl = tmp_path / "logs" / "feature_and_index.pkl"
    pkl.parent.mkdir()
    rows = {0: gen.standard_normal((400, 16)).astype(np.float32), 3: gen.standard_normal((200, 16)).astype(np.float32)}
    save_index_file({k: train_speaker_index(v, permutation=np.arange(len(v))) for k, v in rows.items()}, pkl)
    out = tmp_path / "checkpoints" / "voice"
    assert export_index_for_onnx.main(["-i", str(pkl), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Index-0.index", "Index-3.index"]
    inside = load_index_file(pkl)
    query = gen.standard_normal((50, 16)).astype(np.float32)
    for k, index in inside.items():
        exported = faiss.read_index(str(out / f"Index-{k}.index"))
        assert (exported.ntotal, exported.d, faiss.extract_index_ivf(exported).nprobe) == (len(rows[k]), 16, 1)
        dist, ids = exported.search(query, 8)
        ref_dist, ref_ids = index.search(query, 8)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(dist, ref_dist)
        faiss.write_index(index, str(tmp_path / "native.index"))  # faiss's own writer gives the same bytes
        assert (out / f"Index-{k}.index").read_bytes() == (tmp_path / "native.index").read_bytes()


def test_index_export_errors(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert "not found" in _fails(["-i", str(tmp_path / "missing.pkl"), "-o", str(out)], capsys, export_index_for_onnx)
    not_index = tmp_path / "not_index.pkl"
    not_index.write_bytes(pickle.dumps({0: [1.0, 2.0]}))
    assert "speaker id -> faiss index" in _fails(["-i", str(not_index), "-o", str(out)], capsys,
                                                  export_index_for_onnx)
    checkpoint = tmp_path / "G_0.pth"  # a model file instead of the index
    torch.save({"model": {"w": torch.zeros(2)}}, checkpoint)
    assert "not a readable feature index" in _fails(["-i", str(checkpoint), "-o", str(out)], capsys,
                                                    export_index_for_onnx)
    unsafe = tmp_path / "unsafe.pkl"
    unsafe.write_bytes(pickle.dumps({0: shutil.rmtree}))
    assert "refused" in _fails(["-i", str(unsafe), "-o", str(out)], capsys, export_index_for_onnx)
    assert not out.exists()
    pkl = tmp_path / "ok.pkl"
    save_index_file({0: train_speaker_index(np.random.default_rng(1).standard_normal((100, 8)).astype(np.float32),
                                            permutation=np.arange(100))}, pkl)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "cannot write into" in _fails(["-i", str(pkl), "-o", str(blocker)], capsys, export_index_for_onnx)
    (out / "Index-0.index").mkdir(parents=True)  # the target name is taken by a folder
    assert "cannot write into" in _fails(["-i", str(pkl), "-o", str(out)], capsys, export_index_for_onnx)
    assert [p.name for p in out.iterdir()] == ["Index-0.index"]
