"""FCPE on torchfcpe's bundled model (modules/F0Predictor/fcpe/bundled.py) vs tests/data/torchfcpe_ref.npz.

The reference arrays were recorded with torchfcpe 0.0.4 itself (tests/data/README.md); the "main"
signal is the 44.1 kHz ``signal`` of the 4.1 F0 fixture. The weights are read from the installed
torchfcpe package folder (requirements-weights.txt); the tests skip when it is not installed.
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from core.checkpoint import CheckpointError
from modules.F0Predictor import get_f0_predictor
from modules.F0Predictor.fcpe.bundled import BundledFCPEInfer, bundled_config
from modules.F0Predictor.fcpe.inference import FCPEInfer
from modules.F0Predictor.FCPEF0Predictor import FCPEF0Predictor

REF = Path(__file__).parent / "data" / "torchfcpe_ref.npz"
F0_FIXTURE = FIXTURES / "f0" / "f0_outputs.npz"
RECORDED_VERSION = "0.0.4"
MEL_ATOL = 1e-5
SALIENCE_ATOL = 1e-5
F0_ATOL = 1e-3
SIGNALS = {"main": 44100, "short16k": 16000, "short22k": 22050, "tiny16k": 16000}
THRESHOLDS = {"t005": 0.05, "t0006": 0.006}


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REF) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if not F0_FIXTURE.exists():
        pytest.skip(f"fixture {F0_FIXTURE} not available")
    with np.load(F0_FIXTURE) as npz:
        arrays["main_signal"] = npz["signal"]
    return arrays


@pytest.fixture(scope="module")
def runner() -> BundledFCPEInfer:
    try:
        installed = version("torchfcpe")
    except PackageNotFoundError:
        pytest.skip(f"torchfcpe not installed (pip install --no-deps torchfcpe=={RECORDED_VERSION})")
    if installed != RECORDED_VERSION:
        pytest.skip(f"reference recorded with torchfcpe {RECORDED_VERSION}, found {installed}")
    return BundledFCPEInfer(device="cpu")


@pytest.fixture(scope="module")
def outputs(runner: BundledFCPEInfer, ref) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(mel [1, n, 128], salience [1, n, 360]) of each reference signal, computed once."""
    done = {}
    for name, sr in SIGNALS.items():
        mel = runner.wav2mel(torch.from_numpy(ref[f"{name}_signal"])[None], sr)
        done[name] = (mel, runner.salience(mel))
    return done


def test_config_and_weights(runner: BundledFCPEInfer) -> None:
    c = runner.config
    assert (c.sampling_rate, c.hop_size, c.n_fft, c.win_size, c.num_mels, c.fmin, c.fmax) == (
        16000, 160, 1024, 1024, 128, 0, 8000)
    assert (c.n_layers, c.n_chans, c.out_dims) == (6, 512, 360)
    assert len(runner.model.net.encoder_layers) == 6
    assert runner.weights_path.endswith("fcpe_c_v001.pt")
    # Bin pitches: 360 equal steps in cents re 10 Hz between f0_min = 32.7 and f0_max = 1975.5 Hz.
    cents = 1200 * np.log2(np.array([c.f0_min, c.f0_max]) / 10)
    table = runner.model.cent_table.numpy()
    np.testing.assert_allclose(table, np.linspace(cents[0], cents[1], 360), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", list(SIGNALS))
def test_mel(ref, outputs, name: str) -> None:
    mel = outputs[name][0]
    expected = ref[f"{name}_mel"]
    assert mel.shape[1:] == expected.shape
    if SIGNALS[name] == 16000:  # no resampling: N // 160 + 1 frames, one copy of the last appended
        assert mel.shape[1] == len(ref[f"{name}_signal"]) // 160 + 1
        np.testing.assert_array_equal(mel[0, -1].numpy(), mel[0, -2].numpy())
    np.testing.assert_allclose(mel[0].numpy(), expected, rtol=0, atol=MEL_ATOL)


@pytest.mark.parametrize("name", list(SIGNALS))
def test_salience(runner, ref, outputs, name: str) -> None:
    expected = ref[f"{name}_salience"]
    from_ref_mel = runner.salience(torch.from_numpy(ref[f"{name}_mel"])[None])
    np.testing.assert_allclose(from_ref_mel[0].numpy(), expected, rtol=0, atol=SALIENCE_ATOL)
    np.testing.assert_allclose(outputs[name][1][0].numpy(), expected, rtol=0, atol=SALIENCE_ATOL)


@pytest.mark.parametrize("tag", list(THRESHOLDS))
@pytest.mark.parametrize("name", list(SIGNALS))
def test_f0(runner, ref, outputs, name: str, tag: str) -> None:
    expected = ref[f"{name}_f0_{tag}"]
    threshold = THRESHOLDS[tag]
    decoded = runner.decode(torch.from_numpy(ref[f"{name}_salience"])[None], threshold)[0, :, 0]
    np.testing.assert_array_equal(decoded.numpy() > 0, expected > 0)
    np.testing.assert_allclose(decoded.numpy(), expected, rtol=0, atol=F0_ATOL)
    full = runner.decode(outputs[name][1], threshold)[0, :, 0].numpy()
    np.testing.assert_array_equal(full > 0, expected > 0)
    np.testing.assert_allclose(full, expected, rtol=0, atol=F0_ATOL)


def test_signals_exercise_voicing(ref) -> None:
    # The references must contain voiced and unvoiced frames, and the thresholds must differ somewhere,
    # or the f0 tests above could not catch a voicing error.
    for name in SIGNALS:
        assert (ref[f"{name}_f0_t0006"] > 0).any()
    assert (ref["short16k_f0_t005"] == 0).any() and (ref["main_f0_t005"] == 0).any()
    assert sum(((ref[f"{n}_f0_t005"] > 0) != (ref[f"{n}_f0_t0006"] > 0)).sum() for n in SIGNALS) > 0


def test_absent_checkpoint_uses_bundled_model(runner, ref, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="modules.F0Predictor.FCPEF0Predictor"):
        predictor = get_f0_predictor("fcpe", hop_length=512, sampling_rate=44100, device="cpu",
                                     threshold=0.006)
    assert isinstance(predictor, FCPEF0Predictor)
    assert isinstance(predictor.fcpe, BundledFCPEInfer)
    lines = [r for r in caplog.records if "bundled with torchfcpe" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    # 4.1 post-processing (nearest resize to p_len, gaps interpolated). torchfcpe-based front ends
    # call infer(threshold=0.006, f0_max=880, interp_uv=False, output_interp_target_length=p_len):
    # the same nearest resize, so voiced frames below 880 Hz agree and uv is its voicing.
    signal = ref["main_signal"]
    f0, uv = predictor.compute_f0_uv(signal)
    other = ref["main_infer_plen"]
    assert f0.shape == uv.shape == other.shape == (len(signal) // 512,)
    np.testing.assert_array_equal(uv, (other > 0).astype(np.float32))
    compared = (other > 0) & (other < 880)
    assert compared.sum() > 100
    np.testing.assert_allclose(f0[compared], other[compared], rtol=0, atol=F0_ATOL)
    assert "torchfcpe" not in sys.modules and "torchaudio" not in sys.modules
    assert importlib.util.find_spec("torchfcpe") is not None


def test_present_checkpoint_is_preferred(runner, tmp_path, monkeypatch) -> None:
    small = FIXTURES / "f0" / "fcpe_small.pt"
    if not small.exists():
        pytest.skip(f"fixture {small} not available")
    (tmp_path / "pretrain").mkdir()
    shutil.copy(small, tmp_path / "pretrain" / "fcpe.pt")
    monkeypatch.chdir(tmp_path)
    predictor = get_f0_predictor("fcpe", device="cpu")
    assert type(predictor.fcpe) is FCPEInfer
    assert len(predictor.fcpe.model.decoder._layers) == 2  # the fixture's small 4.1 network


def test_missing_package_error(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    real = importlib.util.find_spec

    def no_torchfcpe(name: str, package: str | None = None):
        return None if name == "torchfcpe" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", no_torchfcpe)
    pattern = r"'fcpe' needs pretrain.fcpe\.pt.*torchfcpe.*pip install --no-deps torchfcpe==0\.0\.4"
    with pytest.raises(FileNotFoundError, match=pattern):
        get_f0_predictor("fcpe", device="cpu")
    # Installed, but without its weight file: the same error.
    spec = importlib.machinery.ModuleSpec("torchfcpe", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: spec)
    with pytest.raises(FileNotFoundError, match="not installed"):
        FCPEF0Predictor(device="cpu")


def test_unsupported_configs_are_refused() -> None:
    good = {"mel": {"sr": 16000, "num_mels": 128, "n_fft": 1024, "win_size": 1024, "hop_size": 160,
                    "fmin": 0, "fmax": 8000},
            "model": {"type": "CFNaiveMelPE", "out_dims": 360, "hidden_dims": 512, "n_layers": 6,
                      "f0_min": 32.7, "f0_max": 1975.5, "conv_only": True}}
    assert bundled_config(good, "x").n_chans == 512
    attention = {"mel": good["mel"], "model": {**good["model"], "conv_only": False}}
    with pytest.raises(CheckpointError, match="conv-only"):
        bundled_config(attention, "x")
    no_hop = {"mel": {k: v for k, v in good["mel"].items() if k != "hop_size"}, "model": good["model"]}
    with pytest.raises(CheckpointError, match=r"config_dict\.mel\.hop_size"):
        bundled_config(no_hop, "x")


def test_rmvpe_error_suggests_fcpe(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"rmvpe\.pt.*--f0_predictor fcpe, which works offline"):
        get_f0_predictor("rmvpe", device="cpu")
