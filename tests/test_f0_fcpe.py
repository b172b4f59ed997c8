"""FCPE predictor against the 4.1 ``f0`` fixture (tolerances from its README).

The fixture's small random checkpoint fcpe_small.pt is installed as pretrain/fcpe.pt in a temporary
working directory. Tolerances are the README's: mel and salience 1e-5, F0 1e-3 Hz, uv exact (no FCPE
frame has a tiny top-2 salience margin).
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, f0_case_names
from core.checkpoint import CheckpointError
from modules.F0Predictor import get_f0_predictor
from modules.F0Predictor.fcpe.inference import FCPEConfig, load_fcpe
from modules.F0Predictor.FCPEF0Predictor import FCPEF0Predictor

FOLDER = FIXTURES / "f0"
MEL_ATOL = 1e-5
SALIENCE_ATOL = 1e-5
F0_ATOL = 1e-3
MEL_KEY = "fcpe.compute_f0_uv__raw__fcpe_mel"
SALIENCE_KEY = "fcpe.compute_f0_uv__raw__fcpe_salience"


@pytest.fixture(scope="module")
def fx() -> tuple[dict, dict[str, np.ndarray]]:
    if not (FOLDER / "f0_outputs.npz").exists():
        pytest.skip(f"fixture {FOLDER} not available")
    with np.load(FOLDER / "f0_outputs.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k.startswith(("fcpe", "signal"))}
    return json.loads((FOLDER / "f0_cases.json").read_text()), arrays


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, fx) -> Path:
    root = tmp_path_factory.mktemp("fcpe")
    (root / "pretrain").mkdir()
    shutil.copy(FOLDER / "fcpe_small.pt", root / "pretrain" / "fcpe.pt")
    return root


@pytest.fixture(scope="module")
def predictor(workdir) -> FCPEF0Predictor:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        p = get_f0_predictor("fcpe", hop_length=512, sampling_rate=44100, device="cpu", threshold=0.05)
    assert isinstance(p, FCPEF0Predictor)
    return p


def test_config_read_from_checkpoint(fx, predictor) -> None:
    meta, _ = fx
    config = meta["fcpe_checkpoint"]["config"]
    c = predictor.fcpe.config
    assert (c.sampling_rate, c.hop_size, c.n_fft, c.win_size, c.num_mels) == (16000, 160, 1024, 1024, 128)
    model = config["model"]
    assert (c.n_layers, c.n_chans, c.out_dims) == (model["n_layers"], model["n_chans"], 360)
    assert len(predictor.fcpe.model.decoder._layers) == 2


def test_mel(fx, predictor) -> None:
    _, a = fx
    mel = predictor.fcpe.wav2mel(torch.from_numpy(a["signal"])[None], 44100)
    # 300 STFT frames at 16 kHz plus ONE copy of the last (44.1 kHz length // 160 + 1 = 827 > 300).
    assert mel.shape == (1, 301, 128)
    np.testing.assert_array_equal(mel[0, -1].numpy(), mel[0, -2].numpy())
    np.testing.assert_allclose(mel.numpy(), a[MEL_KEY], rtol=0, atol=MEL_ATOL)


def test_mel_frame_count_rule(predictor) -> None:
    # The STFT gives N16 // 160 frames; the target N_in // 160 + 1 uses the length before resampling.
    mel = predictor.fcpe.wav2mel(torch.rand(1, 1600) - 0.5, 16000)  # 10 frames, target 11: one appended
    assert mel.shape[1] == 11
    np.testing.assert_array_equal(mel[0, -1].numpy(), mel[0, -2].numpy())
    mel = predictor.fcpe.wav2mel(torch.rand(1, 16000) - 0.5, 8000)  # 200 frames, target 101: cut
    assert mel.shape[1] == 101


def test_salience(fx, predictor) -> None:
    _, a = fx
    salience = predictor.fcpe.salience(torch.from_numpy(a[MEL_KEY]))
    np.testing.assert_allclose(salience.numpy(), a[SALIENCE_KEY], rtol=0, atol=SALIENCE_ATOL)


@pytest.mark.parametrize("case", ["fcpe", "fcpe_adaptive_threshold", "fcpe_all_unvoiced"])
def test_raw_f0(fx, predictor, case: str) -> None:
    meta, a = fx
    threshold = meta["cases"][f"{case}.compute_f0_uv"]["threshold"]
    ref = a[f"{case}.compute_f0_uv__raw__fcpe_f0"]
    decoded = predictor.fcpe.decode(torch.from_numpy(a[SALIENCE_KEY]), threshold)
    assert decoded.dtype == torch.float32 and decoded.shape == ref.shape == (1, 301, 1)
    np.testing.assert_allclose(decoded.numpy(), ref, rtol=0, atol=F0_ATOL)
    full = predictor.fcpe(torch.from_numpy(a["signal"]), 44100, threshold)
    np.testing.assert_array_equal(full.numpy() > 0, ref > 0)
    np.testing.assert_allclose(full.numpy(), ref, rtol=0, atol=F0_ATOL)


@pytest.mark.parametrize("name", f0_case_names("fcpe"))
def test_case(fx, predictor, name: str) -> None:
    meta, a = fx
    case = meta["cases"][name]
    p = copy.copy(predictor)
    p.threshold = case["threshold"]
    signal = a["signal"]
    method = name.split(".")[1]
    p_len = None
    if method.endswith("_plen+2"):
        p_len = len(signal) // 512 + 2
        method = method.removesuffix("_plen+2")
    out = getattr(p, method)(signal, p_len)
    if case["returns"] == "single":
        outs, specs = [out], [case["ret"]]
    else:
        assert isinstance(out, tuple) and len(out) == 2
        outs, specs = list(out), [case["ret0"], case["ret1"]]
    for value, spec, atol in zip(outs, specs, (F0_ATOL, 0.0)):  # uv (second) exactly
        ref = a[spec["key"]]
        assert isinstance(value, np.ndarray) and value.dtype == ref.dtype and value.shape == ref.shape
        np.testing.assert_allclose(value, ref, rtol=0, atol=atol)


def test_missing_checkpoint_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Without pretrain/fcpe.pt the bundled torchfcpe weights are used; take those away too.
    monkeypatch.setattr("modules.F0Predictor.fcpe.bundled.bundled_weights_path", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"'fcpe' needs pretrain.fcpe\.pt"):
        get_f0_predictor("fcpe", device="cpu")


def test_bad_checkpoints_are_refused(tmp_path) -> None:
    good = torch.load(FOLDER / "fcpe_small.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "fcpe.pt"
    broken = {"config": good["config"], "model": dict(good["model"])}
    del broken["model"]["norm.bias"]
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=r"fcpe\.pt.*norm\.bias"):
        load_fcpe(path)
    config = json.loads(json.dumps(good["config"]))
    del config["mel"]["hop_size"]
    torch.save({"config": config, "model": good["model"]}, path)
    with pytest.raises(CheckpointError, match=r"config\.mel\.hop_size"):
        load_fcpe(path)
    config = json.loads(json.dumps(good["config"]))
    config["model"]["use_siren"] = True
    with pytest.raises(CheckpointError, match="use_siren"):
        FCPEConfig.from_checkpoint(config, str(path))
