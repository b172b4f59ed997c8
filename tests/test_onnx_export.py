"""onnx_export.py and onnxexport/: graph interface, MoeVS descriptor, and numbers against 4.1 fixtures.

Graphs are exported from the synth fixtures: vec256_vol (3 speakers, vol_embedding: mix variant with
a vol input) and a single-speaker model cut from base_vec768 (id variant). With the RNG zeroed while
tracing, the source's random start phases and noise become zeros, so the graph is a pure function and
must reproduce 4.1's zeroed-RNG ``infer`` audio (the frame-rate and sample-rate sine sources agree to
float rounding: the phase corrections differ by whole periods only).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import onnx_export
from conftest import FIXTURES, load_fixture, zeroed_rng
from export.onnx import export_folder, load_model
from export.model_onnx import OPSET, SynthesizerTrnOnnx, frame_source_decoder

pytestmark = pytest.mark.usefixtures("single_thread")

SYNTH = FIXTURES / "synth"
AUDIO_TOL = 1e-4
FEATURE_TOL = 1e-5


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(inputs)
    return session.run(["audio"], {n: x.numpy() for n, x in zip(names, inputs)})[0]


def _close(actual: np.ndarray | torch.Tensor, expected: np.ndarray, tol: float, what: str) -> None:
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else actual
    assert actual.shape == expected.shape and actual.dtype == np.float32, what
    err = float(np.abs(actual.astype(np.float64) - expected).max())
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol}"


def _fixture_inputs(arrays: dict[str, np.ndarray], noise_channels: int) -> dict[str, torch.Tensor]:
    """Fixture inputs in graph layout: units time-major, one unit per frame (mel2ph = 1..T), zero noise."""
    c = torch.from_numpy(arrays["in_c"])
    frames = c.size(2)
    return {"c": c.transpose(1, 2).contiguous(), "f0": torch.from_numpy(arrays["in_f0"]),
            "mel2ph": torch.arange(1, frames + 1).unsqueeze(0), "uv": torch.from_numpy(arrays["in_uv"]),
            "noise": torch.zeros(1, noise_channels, frames)}


def _make_folder(root: Path, name: str, source: str, checkpoint: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copyfile(SYNTH / source / checkpoint, folder / "model.pth")
    shutil.copyfile(SYNTH / source / "config.json", folder / "config.json")
    return folder


def _single_speaker_folder(root: Path, name: str, speaker: int) -> Path:
    """base_vec768 reduced to one speaker (its embedding row ``speaker``), as a folder for export."""
    folder = root / name
    folder.mkdir(parents=True)
    ckpt = torch.load(SYNTH / "base_vec768" / "G_800.pth", map_location="cpu", weights_only=True)
    state = dict(ckpt["model"])
    state["emb_g.weight"] = state["emb_g.weight"][speaker:speaker + 1].clone()
    torch.save({"model": state, "iteration": 1, "optimizer": None, "learning_rate": 1e-4}, folder / "model.pth")
    cfg = json.loads((SYNTH / "base_vec768" / "config.json").read_text())
    cfg["model"]["n_speakers"] = 1
    cfg["spk"] = {"solo": 0}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return folder


TEST_TRACE_FRAMES = 24  # the graph does not depend on the trace length; 200 (the default) is slow


@pytest.fixture(scope="module")
def exports(tmp_path_factory, single_thread) -> dict:
    """Zeroed-RNG exports of 'mix' (vec256_vol) and 'single' (one speaker of base_vec768), with sessions."""
    if not (SYNTH / "vec256_vol" / "G_0.pth").exists() or not (SYNTH / "base_vec768" / "G_800.pth").exists():
        pytest.skip("synth fixtures not available")
    root = tmp_path_factory.mktemp("checkpoints")
    _make_folder(root, "volmix", "vec256_vol", "G_0.pth")
    _single_speaker_folder(root, "solo", speaker=1)
    with zeroed_rng():
        results = {"mix": export_folder("volmix", root, frames=TEST_TRACE_FRAMES),
                   "single": export_folder("solo", root, frames=TEST_TRACE_FRAMES)}
    out: dict = {"root": root}
    for kind, result in results.items():
        out[kind] = result.onnx_path
        out[kind + "_session"] = _session(result.onnx_path)
        out[kind + "_result"] = result
    return out


def _wrapper(folder: Path, n_mix: int) -> SynthesizerTrnOnnx:
    """The PyTorch export variant with exactly the exported weights (weight norm folded)."""
    net, _ = load_model(folder / "model.pth", folder / "config.json")
    net.remove_weight_norm()
    return SynthesizerTrnOnnx(net, n_mix)


# -- files and descriptor -------------------------------------------------------------------------
def test_files_link_and_moevs_json(exports) -> None:
    root = exports["root"]
    assert (exports["mix_result"].speaker_mix, exports["mix_result"].vol_embedding) == (True, True)
    assert (exports["single_result"].speaker_mix, exports["single_result"].vol_embedding) == (False, False)
    assert exports["mix"].is_file() and os.path.samefile(exports["mix"], root / "volmix" / "model.onnx")
    assert os.path.samefile(exports["single"], root / "solo" / "model.onnx")
    assert not [p for p in (root / "volmix").iterdir() if p.name.endswith(".tmp")]
    text = (root / "volmix.json").read_text()
    assert text.startswith('{\n    "Folder": "volmix",')
    assert list(json.loads(text).items()) == [
        ("Folder", "volmix"), ("Name", "volmix"), ("Type", "SoVits"), ("Rate", 44100), ("Hop", 512),
        ("Hubert", "vec-24-layer-9"), ("SoVits4", True), ("SoVits3", False), ("CharaMix", True),
        ("Volume", True), ("HiddenSize", 24), ("Characters", ["speaker0", "speaker1", "speaker2"]),
        ("Cluster", "")]
    single = json.loads((root / "solo.json").read_text())
    assert (single["CharaMix"], single["Volume"], single["Characters"]) == (False, False, ["solo"])
    assert (single["Hubert"], single["HiddenSize"]) == ("vec-16-layer-9", 16)


def test_graph_interface(exports) -> None:
    mix, single = exports["mix_session"], exports["single_session"]
    spec = [(i.name, i.type, i.shape) for i in mix.get_inputs()]
    assert spec == [
        ("c", "tensor(float)", ["c_dynamic_axes_1", "c_dynamic_axes_2", 256]),
        ("f0", "tensor(float)", [1, "f0_dynamic_axes_1"]),
        ("mel2ph", "tensor(int64)", [1, "mel2ph_dynamic_axes_1"]),
        ("uv", "tensor(float)", [1, "uv_dynamic_axes_1"]),
        ("noise", "tensor(float)", [1, 16, "noise_dynamic_axes_1"]),
        ("sid", "tensor(float)", ["sid_dynamic_axes_1", 3]),
        ("vol", "tensor(float)", [1, "vol_dynamic_axes_1"])]
    spec = [(i.name, i.type, i.shape) for i in single.get_inputs()]
    assert spec[-1] == ("sid", "tensor(int64)", [1]) and [s[0] for s in spec] == ["c", "f0", "mel2ph", "uv", "noise", "sid"]
    assert spec[0][2][2] == 768 and spec[4][2][1] == 12
    for session in (mix, single):
        (out,) = session.get_outputs()
        assert out.name == "audio" and out.type == "tensor(float)" and len(out.shape) == 3
    graph = onnx.load(str(exports["mix"]))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]


# -- numbers ----------------------------------------------------------------------------------------
def test_id_graph_reproduces_infer(exports) -> None:
    _, arrays = load_fixture("synth/base_vec768")
    assert arrays["in_sid"].tolist() == [[1]]  # the single-speaker model kept embedding row 1
    x = _fixture_inputs(arrays, 12)
    audio = _run(exports["single_session"], (*x.values(), torch.LongTensor([0])))
    _close(audio, arrays["zn_audio"], AUDIO_TOL, "id graph vs zeroed-RNG infer")


def test_mix_vol_graph_reproduces_infer(exports) -> None:
    _, arrays = load_fixture("synth/vec256_vol")
    x = _fixture_inputs(arrays, 16)
    frames = x["f0"].size(1)
    weights = torch.zeros(frames, 3)
    weights[:, int(arrays["in_sid"][0, 0])] = 1.0  # one-hot mix == that speaker's id
    audio = _run(exports["mix_session"], (*x.values(), weights, torch.from_numpy(arrays["in_vol"])))
    _close(audio, arrays["zn_audio"], AUDIO_TOL, "mix graph vs zeroed-RNG infer")


def _other_length_inputs(ssl_dim: int, inter: int, frames: int = 23, units: int = 15) -> tuple[torch.Tensor, ...]:
    """Fewer units than frames, repeated and zero (no unit) mel2ph entries, non-zero noise."""
    gen = torch.Generator().manual_seed(7)
    c = torch.randn(1, units, ssl_dim, generator=gen)
    mel2ph = (torch.arange(frames) * units // frames + 1).unsqueeze(0)
    mel2ph[0, :2] = 0
    f0 = 180 + 120 * torch.rand(1, frames, generator=gen)
    uv = (torch.rand(1, frames, generator=gen) > 0.2).float()
    f0 = f0 * uv
    noise = 0.4 * torch.randn(1, inter, frames, generator=gen)
    return c, f0, mel2ph, uv, noise, gen


@pytest.mark.parametrize("kind", ["mix", "single"])
def test_graph_at_another_length_matches_torch(exports, kind: str) -> None:
    folder = exports[kind].parent
    model = _wrapper(folder, 3 if kind == "mix" else 0)
    c, f0, mel2ph, uv, noise, gen = _other_length_inputs(model.net.ssl_dim, model.net.inter_channels)
    frames = f0.size(1)
    if kind == "mix":
        inputs = (c, f0, mel2ph, uv, noise, torch.rand(frames, 3, generator=gen), 0.5 * torch.rand(1, frames, generator=gen))
    else:
        inputs = (c, f0, mel2ph, uv, noise, torch.LongTensor([0]))
    with zeroed_rng(), torch.no_grad():
        expected = model(*inputs).numpy()
    assert expected.shape == (1, 1, frames * 512) and float(np.abs(expected).max()) > 0.05
    _close(_run(exports[kind + "_session"], inputs), expected, AUDIO_TOL, f"{kind} graph at {frames} frames")


def test_exported_graph_keeps_source_randomness(exports, tmp_path: Path) -> None:
    _single_speaker_folder(tmp_path, "solo", speaker=1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the command as users run it: 200 trace frames, real RNG
        assert onnx_export.main(["--model_name", "solo", "--checkpoints_dir", str(tmp_path)]) == 0
    path = tmp_path / "solo" / "solo_SoVits.onnx"
    assert out.getvalue().splitlines() == [f"wrote {path} (speaker id (sid [1]))",
                                           f"linked {tmp_path / 'solo' / 'model.onnx'}",
                                           f"wrote {tmp_path / 'solo.json'}"]
    assert os.path.samefile(path, tmp_path / "solo" / "model.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"RandomUniformLike", "RandomNormalLike"} <= ops  # start phases, source noise
    _, arrays = load_fixture("synth/base_vec768")
    x = (*_fixture_inputs(arrays, 12).values(), torch.LongTensor([0]))
    noisy = _run(_session(path), x)
    clean = _run(exports["single_session"], x)
    diff = float(np.abs(noisy - clean).max())
    assert noisy.shape == clean.shape and np.isfinite(noisy).all() and 1e-3 < diff < 0.2


# -- the PyTorch export variant ------------------------------------------------------------------
def _base_net():
    folder = SYNTH / "base_vec768"
    if not (folder / "G_800.pth").exists():
        pytest.skip("synth fixtures not available")
    net, _ = load_model(folder / "G_800.pth", folder / "config.json")
    return net


def test_wrapper_mix_matches_fixture() -> None:
    _, arrays = load_fixture("synth/base_vec768")
    model = SynthesizerTrnOnnx(_base_net(), 3)
    x = _fixture_inputs(arrays, 12)
    mix = torch.from_numpy(arrays["in_spkmix"])
    with zeroed_rng(), torch.no_grad():
        z, g = model.encode(*x.values(), mix)
        audio = model(*x.values(), mix)
    _close(g, arrays["mix_g"], FEATURE_TOL, "mix g")
    _close(z, arrays["mix_z"], FEATURE_TOL, "mix z")
    _close(audio, arrays["mix_audio"], AUDIO_TOL, "mix audio")


def test_wrapper_gather_and_noise_match_infer() -> None:
    """mel2ph gathering and the noise input give exactly infer's flow output for the same noise."""
    net = _base_net()
    model = SynthesizerTrnOnnx(net)
    c, f0, mel2ph, uv, _, _ = _other_length_inputs(net.ssl_dim, net.inter_channels, frames=40, units=25)
    table = torch.cat([torch.zeros(1, 1, net.ssl_dim), c], dim=1)
    frame_units = table[0, mel2ph[0]].T.unsqueeze(0)  # [1, ssl, T]; zero column where mel2ph == 0
    # infer's first draw is the prior noise, from a generator seeded with its seed.
    eps = torch.randn(1, net.inter_channels, 40, generator=torch.Generator().manual_seed(52468))
    captured = {}
    handle = net.flow.register_forward_hook(lambda _m, _a, out: captured.setdefault("z", out.clone()))
    try:
        net.infer(frame_units, f0, uv, g=torch.LongTensor([[2]]), noice_scale=0.4, seed=52468)
    finally:
        handle.remove()
    with torch.no_grad():
        z, g = model.encode(c, f0, mel2ph, uv, 0.4 * eps, torch.LongTensor([2]))
    assert g.shape == (1, net.gin_channels, 1)
    assert float((z - captured["z"]).abs().max()) <= FEATURE_TOL


def test_frame_source_decoder_shares_every_layer() -> None:
    net = _base_net()
    view = frame_source_decoder(net.dec)
    assert view.ups is net.dec.ups and view.resblocks is net.dec.resblocks and view.cond is net.dec.cond
    assert view.noise_convs is net.dec.noise_convs and view.conv_post is net.dec.conv_post
    assert view.m_source is not net.dec.m_source and view.m_source.l_linear is net.dec.m_source.l_linear
    assert (view.m_source.source, net.dec.m_source.source) == ("frame", "sample")
    shared = {id(p) for p in net.dec.parameters()}
    assert {id(p) for p in view.parameters()} == shared


# -- user errors ------------------------------------------------------------------------------------
def test_user_errors_exit_1(tmp_path: Path, capsys) -> None:
    assert onnx_export.main(["-n", "absent", "--checkpoints_dir", str(tmp_path)]) == 1
    assert "absent not found" in capsys.readouterr().err
    folder = _make_folder(tmp_path, "wrong", "vec256_vol", "G_0.pth")
    shutil.copyfile(SYNTH / "base_vec768" / "config.json", folder / "config.json")
    assert onnx_export.main(["-n", "wrong", "--checkpoints_dir", str(tmp_path)]) == 1
    assert "Use the config.json the model was trained with" in capsys.readouterr().err
    (folder / "model.pth").unlink()
    assert onnx_export.main(["-n", "wrong", "--checkpoints_dir", str(tmp_path)]) == 1
    assert "model.pth not found" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))
