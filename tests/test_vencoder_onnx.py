"""The five `*-onnx` speech encoders: our PyTorch encoders (reduced fixture checkpoints) exported to ONNX in
4.1's layout, loaded through the registry from a tmp `pretrain/`, compared with the 4.1 references and
with the PyTorch path; plus the errors for missing, foreign and wrong-width files."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("onnx")  # torch.onnx.export writes through it
pytest.importorskip("onnxruntime")

from conftest import VENCODER_FIXTURES, load_npz  # noqa: E402
from core.checkpoint import CheckpointError  # noqa: E402
from vencoder import ENCODER_DIMS, encoder_file, get_speech_encoder, speech_encoder_names  # noqa: E402
from vencoder.encoder import PretrainNotFoundError, SpeechEncoder  # noqa: E402
from vencoder.hubert import FairseqHubertEncoder, HubertModel, load_hubert_checkpoint  # noqa: E402
from vencoder.hubert_soft import HubertSoftEncoder, load_hubert_soft  # noqa: E402
from vencoder.onnx_encoder import OnnxSpeechEncoder, onnx_providers  # noqa: E402

TOL = 1e-4  # max |a - ref|, as for every encoder
CONTENTVEC = VENCODER_FIXTURES / "contentvec_reduced.pt"
HUBERTSOFT = VENCODER_FIXTURES / "hubertsoft_reduced.pt"
SOFT_HEADS = 4  # the reduced HuBERT-Soft has 4 heads (not stored in the file)

pytestmark = [pytest.mark.skipif(not CONTENTVEC.exists(), reason="fixtures/vencoder not available"),
              pytest.mark.usefixtures("single_thread")]

# name -> (4.1 file name, output layer, final_proj); None layer = HuBERT-Soft
VARIANTS: dict[str, tuple[str, int | None, bool]] = {
    "vec256l9-onnx": ("vec-256-layer-9.onnx", 9, True),
    "vec256l12-onnx": ("vec-256-layer-12.onnx", 12, True),
    "vec768l9-onnx": ("vec-768-layer-9.onnx", 9, False),
    "vec768l12-onnx": ("vec-768-layer-12.onnx", 12, False),
    "hubertsoft-onnx": ("hubert-soft.onnx", None, True),
}


def _npz(name: str) -> dict[str, np.ndarray]:
    return load_npz(VENCODER_FIXTURES / name)


class _Exported(nn.Module):
    """What a 4.1 encoder file computes: source [1, 1, N] -> embed [1, T, dim]. The reduced models are
    narrower (48 / 32) than the names promise (768 / 256), so the channels are zero-filled up to `dim`."""

    def __init__(self, model: HubertModel, layer: int | None, proj: bool, dim: int) -> None:
        super().__init__()
        self.model, self.layer, self.proj = model, layer, proj
        width = model.final_proj.out_features if proj else model.cfg.encoder_embed_dim
        self.fill = dim - width

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        x = source[:, 0]
        if self.layer is None:  # HuBERT-Soft: the padding is part of the graph
            x = F.pad(x, (40, 40))
        h = self.model(x, self.layer)
        if self.proj:
            h = self.model.final_proj(h)
        return F.pad(h, (0, self.fill))


def _export(module: nn.Module, path: Path, in_shape: tuple[int, ...], dynamic: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():  # the TorchScript exporter: deprecated (warns) but quick for these graphs
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(in_shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["source"], output_names=["embed"], dynamic_axes=dynamic)


_SPEECH_AXES = {"source": {2: "samples"}, "embed": {1: "frames"}}


@pytest.fixture(scope="module")
def pretrain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pretrain")
    contentvec = load_hubert_checkpoint(CONTENTVEC)
    soft = load_hubert_soft(HUBERTSOFT, SOFT_HEADS)
    for name, (file, layer, proj) in VARIANTS.items():
        model = soft if layer is None else contentvec
        _export(_Exported(model, layer, proj, ENCODER_DIMS[name]), folder / file, (1, 1, 2000), _SPEECH_AXES)
    return folder


def _torch_encoder(name: str) -> SpeechEncoder:
    _, layer, proj = VARIANTS[name]
    if layer is None:
        return HubertSoftEncoder(HUBERTSOFT, "cpu", num_heads=SOFT_HEADS)
    return FairseqHubertEncoder(CONTENTVEC, "cpu", output_layer=layer, use_final_proj=proj)


def _reference_41(name: str) -> np.ndarray | None:
    """4.1's output for the fixture wav where the fixtures hold it ([1, C, 75])."""
    if name == "hubertsoft-onnx":
        return _npz("hubertsoft_reduced_ref.npz")["hubertsoft"]
    ref = _npz("contentvec_reduced_ref.npz")
    return {"vec768l12-onnx": ref["vec768l12"], "vec256l9-onnx": ref["vec256l9"],
            "vec768l9-onnx": ref["layer_outputs"][8].T[None]}.get(name)


def _check(out: torch.Tensor, expected: np.ndarray, dim: int) -> None:
    """`out` [1, dim, T]: the first C channels equal `expected` [1, C, T], the zero fill stays zero."""
    width = expected.shape[1]
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert tuple(out.shape) == (1, dim, expected.shape[2])
    got = out.numpy()
    np.testing.assert_allclose(got[:, :width], expected, rtol=0, atol=TOL)
    assert not got[:, width:].any()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_onnx_matches_41_reference_and_torch(name: str, pretrain: Path) -> None:
    enc = get_speech_encoder(name, device="cpu", pretrain_dir=pretrain)
    assert isinstance(enc, OnnxSpeechEncoder) and enc.dim == ENCODER_DIMS[name]
    assert enc.input_name == "source" and enc.session.get_providers() == ["CPUExecutionProvider"]
    wav = torch.from_numpy(_npz("contentvec_reduced_ref.npz")["wav"])
    torch_enc = _torch_encoder(name)

    out = enc.encoder(wav)
    ref = _reference_41(name)
    _check(out, torch_enc.encoder(wav).numpy() if ref is None else ref, enc.dim)

    # A second, odd length (not the trace length either): frames follow the graph's own formula.
    short = wav[3000:3000 + 9001]
    frames = 9001 // 320 if name == "hubertsoft-onnx" else (9001 - 400) // 320 + 1
    expected = torch_enc.encoder(short).numpy()
    assert expected.shape[2] == frames
    _check(enc.encoder(short), expected, enc.dim)


def test_stereo_is_averaged_to_mono(pretrain: Path) -> None:
    ref = _npz("contentvec_reduced_ref.npz")
    enc = get_speech_encoder("vec768l12-onnx", device="cpu", pretrain_dir=pretrain)
    _check(enc.encoder(torch.from_numpy(ref["wav_stereo"])), ref["vec768l12_from_stereo"], 768)


def test_every_onnx_name_is_covered_with_its_4_1_file() -> None:
    assert [n for n in speech_encoder_names() if n.endswith("-onnx")] == list(VARIANTS)
    assert {name: encoder_file(name) for name in VARIANTS} == {name: v[0] for name, v in VARIANTS.items()}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_missing_file_names_file_and_encoder(name: str, tmp_path: Path) -> None:
    with pytest.raises(PretrainNotFoundError) as info:
        get_speech_encoder(name, device="cpu", pretrain_dir=tmp_path)
    msg = str(info.value)
    assert VARIANTS[name][0] in msg and f"speech encoder {name}" in msg and "ONNX" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_file_of_another_width_is_rejected(pretrain: Path, tmp_path: Path) -> None:
    shutil.copy(pretrain / "vec-768-layer-12.onnx", tmp_path / "vec-256-layer-9.onnx")
    with pytest.raises(CheckpointError, match=r"vec-256-layer-9\.onnx.*outputs 768 features.*must give 256"):
        get_speech_encoder("vec256l9-onnx", device="cpu", pretrain_dir=tmp_path)


class _FlatConv(nn.Module):
    """[1, N] -> [1, T, 8]: a 2-D waveform input, which 4.1's [1, 1, N] feed cannot use."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 400, stride=320)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return self.conv(source[:, None]).transpose(1, 2)


class _Fold(nn.Module):
    """[1, 1, N] -> [1, 4, N / 4]: a width that no shape inference can know before the run."""

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return source.reshape(1, 4, -1)


def test_width_only_known_at_run_time_is_checked(tmp_path: Path) -> None:
    _export(_Fold(), tmp_path / "vec-768-layer-12.onnx", (1, 1, 2000), {"source": {2: "samples"}})
    enc = get_speech_encoder("vec768l12-onnx", device="cpu", pretrain_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"shape \[1, 4, 8\], expected \[1, frames, 768\]"):
        enc.encoder(torch.zeros(32))


def test_not_a_speech_encoder_is_rejected(tmp_path: Path) -> None:
    _export(_FlatConv(), tmp_path / "hubert-soft.onnx", (1, 2000),
            {"source": {1: "samples"}, "embed": {1: "frames"}})
    with pytest.raises(CheckpointError, match=r"does not look like a speech encoder.*expected \[1, 1, samples\]"):
        get_speech_encoder("hubertsoft-onnx", device="cpu", pretrain_dir=tmp_path)
    (tmp_path / "hubert-soft.onnx").write_bytes(b"PK\x03\x04 a torch zip, not ONNX")
    with pytest.raises(CheckpointError, match="cannot be loaded as an ONNX model"):
        get_speech_encoder("hubertsoft-onnx", device="cpu", pretrain_dir=tmp_path)


def test_execution_providers_follow_device() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(torch.device("cuda:1"), both) == [("CUDAExecutionProvider", {"device_id": 1}),
                                                            "CPUExecutionProvider"]
    assert onnx_providers(torch.device("cuda"), both)[0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert onnx_providers(torch.device("cuda"), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_providers(torch.device("cpu"), both) == ["CPUExecutionProvider"]


def test_cuda_request_without_cuda_runtime_falls_back_to_cpu(pretrain: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu installed: no fallback to check")
    with caplog.at_level("WARNING", logger="vencoder.onnx_encoder"):
        enc = OnnxSpeechEncoder(pretrain / "hubert-soft.onnx", "cuda", dim=256)
    assert enc.device == torch.device("cuda") and enc.session.get_providers() == ["CPUExecutionProvider"]
    assert "no CUDA provider" in caplog.text and "onnxruntime-gpu" in caplog.text
