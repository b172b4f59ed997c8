"""modules/mel_processing.py against the 4.1 fixture (mel/): spectrogram, mel, vocoder mel, volume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_fixture
from modules import mel_processing as mp

LINEAR_TOL = 1e-5  # abs or rel, README_synth.md "Tolerances"
LOG_MEL_TOL = 1e-4


@pytest.fixture(scope="module")
def mel_arrays() -> dict[str, np.ndarray]:
    return load_fixture("mel")[1]


def _signal(arrays: dict[str, np.ndarray], name: str) -> torch.Tensor:
    return torch.from_numpy(arrays[f"signal_{name}"])[None]


def _assert_linear(actual: torch.Tensor, expected: np.ndarray) -> None:
    got = actual.detach().cpu().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=LINEAR_TOL, atol=LINEAR_TOL)


def _assert_log_mel(actual: torch.Tensor, expected: np.ndarray) -> None:
    got = actual.detach().cpu().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=LOG_MEL_TOL)


@pytest.mark.parametrize("name", ["a", "b"])
def test_spectrogram_and_mel(mel_arrays: dict[str, np.ndarray], name: str) -> None:
    y = _signal(mel_arrays, name)
    _assert_linear(mp.spectrogram_torch(y, 2048, 44100, 512, 2048, center=False), mel_arrays[f"spec_{name}"])
    spec_in = torch.from_numpy(mel_arrays[f"spec_{name}"])
    _assert_log_mel(mp.spec_to_mel_torch(spec_in, 2048, 80, 44100, 0.0, 22050), mel_arrays[f"spec_to_mel_{name}"])
    mel = mp.mel_spectrogram_torch(y, 2048, 80, 44100, 512, 2048, 0.0, 22050, center=False)
    _assert_log_mel(mel, mel_arrays[f"mel_{name}"])


def test_batch_spectrogram(mel_arrays: dict[str, np.ndarray]) -> None:
    batch = torch.from_numpy(mel_arrays["batch_in"])
    _assert_linear(mp.spectrogram_torch(batch, 2048, 44100, 512, 2048), mel_arrays["batch_spec"])


def test_filterbanks(mel_arrays: dict[str, np.ndarray]) -> None:
    _assert_linear(mp.mel_filterbank(44100, 2048, 80, 0.0, 22050), mel_arrays["mel_basis_80"])
    _assert_linear(mp.mel_filterbank(44100, 2048, 128, 40, 16000), mel_arrays["nv_mel_basis_128"])


@pytest.mark.parametrize("name", ["a", "b"])
def test_volume(mel_arrays: dict[str, np.ndarray], name: str) -> None:
    y = _signal(mel_arrays, name)
    _assert_linear(mp.VolumeExtractor(512).extract(y), mel_arrays[f"volume_{name}"])
    # [N] input and numpy input take the same path.
    _assert_linear(mp.volume_extract(mel_arrays[f"signal_{name}"], 512), mel_arrays[f"volume_{name}"])


@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize(
    ("suffix", "keyshift", "speed"),
    [("", 0, 1), ("_keyshift_p3", 3, 1), ("_keyshift_m2", -2, 1), ("_speed_1p25", 0, 1.25)],
)
def test_vocoder_mel(mel_arrays: dict[str, np.ndarray], name: str, suffix: str, keyshift: int, speed: float) -> None:
    stft = mp.VocoderMel(44100, 128, 2048, 2048, 512, 40, 16000)
    mel = stft.get_mel(_signal(mel_arrays, name), keyshift=keyshift, speed=speed)
    _assert_log_mel(mel, mel_arrays[f"nv_mel_{name}{suffix}"])


@pytest.mark.parametrize(("input_key", "output_key"), [("nv_short_in", "nv_mel_short"), ("nv_mid_in", "nv_mel_mid")])
def test_vocoder_mel_short_signals(mel_arrays: dict[str, np.ndarray], input_key: str, output_key: str) -> None:
    stft = mp.VocoderMel()
    _assert_log_mel(stft(torch.from_numpy(mel_arrays[input_key])), mel_arrays[output_key])


def test_vocoder_mel_pad_equal_to_length_uses_zeros() -> None:
    # At 768 samples the right pad max(768, 2048 - 768 - 768) equals the length: 4.1 falls back to zeros.
    y = torch.linspace(-0.5, 0.5, 768)[None]
    mel = mp.VocoderMel().get_mel(y)
    assert mel.shape == (1, 128, 1)
    padded = torch.nn.functional.pad(y, (768, 768))
    spec = mp.stft_magnitude(padded, 2048, 512, 2048, 0, 0, eps=1e-9)
    expected = torch.log(torch.clamp(mp.mel_filterbank(44100, 2048, 128, 40, 16000) @ spec, min=1e-5))
    _assert_log_mel(mel, expected.numpy())


@pytest.mark.parametrize("length", [800, 1000, 16317, 22050, 44100])
def test_frame_count_is_floor_of_length_over_hop(length: int) -> None:
    # Lengths start above 768 because reflect padding needs a pad shorter than the signal (as in 4.1).
    y = torch.sin(torch.arange(length, dtype=torch.float32) * 0.01)[None] * 0.5
    assert mp.spectrogram_torch(y, 2048, 44100, 512, 2048).shape[-1] == length // 512
    assert mp.volume_extract(y, 512).shape == (length // 512,)
    assert mp.mel_spectrogram_torch(y, 2048, 80, 44100, 512, 2048, 0.0, 22050).shape[-1] == length // 512
    assert mp.VocoderMel().get_mel(y).shape[-1] == length // 512
    assert mp.VocoderMel().get_mel(y, keyshift=5).shape[-1] == length // 512


def test_filterbank_cache_is_keyed_by_all_parameters(mel_arrays: dict[str, np.ndarray]) -> None:
    # 4.1 keyed on fmax only: an 80-mel call followed by a 128-mel call with the same fmax reused the first.
    spec = torch.from_numpy(mel_arrays["spec_b"])
    mel80 = mp.spec_to_mel_torch(spec, 2048, 80, 44100, 0.0, 22050)
    mel128 = mp.spec_to_mel_torch(spec, 2048, 128, 44100, 0.0, 22050)
    assert mel80.shape[1] == 80 and mel128.shape[1] == 128
    fb80 = mp.mel_filterbank(44100, 2048, 80, 0.0, 22050)
    fb128 = mp.mel_filterbank(44100, 2048, 128, 0.0, 22050)
    assert fb80.shape == (80, 1025) and fb128.shape == (128, 1025)
    assert mp.mel_filterbank(44100, 2048, 80, 0.0, 22050) is fb80  # still cached
    fb64 = mp.mel_filterbank(44100, 2048, 80, 0.0, 22050, dtype=torch.float64)
    assert fb64.dtype == torch.float64
    # And a vocoder mel with another n_fft at the same fmax gets its own filterbank.
    assert mp.mel_filterbank(44100, 1024, 128, 40, 16000).shape == (128, 513)
    _assert_linear(mp.mel_filterbank(44100, 2048, 128, 40, 16000), mel_arrays["nv_mel_basis_128"])


def test_caches_filled_in_inference_mode_serve_autograd() -> None:
    """A window or filterbank first built under inference_mode (conversion, benches) must not break a
    later training step that backpropagates through the mel."""
    mp._WINDOW_CACHE.clear()
    mp._MEL_CACHE.clear()
    with torch.inference_mode():
        mp.mel_spectrogram_torch(torch.zeros(1, 4096), 1024, 80, 22050, 256, 1024, 0, None)
    y = torch.randn(1, 4096, requires_grad=True)
    mel = mp.mel_spectrogram_torch(y, 1024, 80, 22050, 256, 1024, 0, None)
    mel.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
