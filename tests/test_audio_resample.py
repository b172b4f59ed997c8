"""Windowed-sinc resampler: bit-level agreement with 4.1's torchaudio resampling (fixture
../shared/fixtures/sovits41/f0: rmvpe_audio_16k = torchaudio Resample(44100, 16000,
lowpass_filter_width=128) of the test signal) and the behaviour of the default 6-crossing filter."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from modules.audio_resample import resample, sinc_resample_kernel

NPZ = FIXTURES / "f0" / "f0_outputs.npz"


def test_matches_torchaudio_recording() -> None:
    if not NPZ.exists():
        pytest.skip(f"fixture {NPZ} not available")
    with np.load(NPZ) as npz:
        signal, expected = npz["signal"], npz["rmvpe.compute_f0_uv__raw__rmvpe_audio_16k"]
    out = resample(torch.from_numpy(signal)[None], 44100, 16000, lowpass_filter_width=128)
    assert out.dtype == torch.float32 and out.shape == expected.shape == (1, 48000)
    # Same kernel values and convolution: bit-identical here. A few float32 ulps are allowed for other
    # CPU kernels; a kernel built from float64 phases (the obvious port) is off by 9.5e-7.
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=2.5e-7)


def test_kernel_shape_and_dc_gain() -> None:
    kernel, width = sinc_resample_kernel(44100, 16000, lowpass_filter_width=6)
    # gcd 100: 441 -> 160 phases; width = ceil(6 * 441 / (160 * 0.99)) = 17
    assert width == 17 and kernel.shape == (160, 1, 2 * 17 + 441)
    assert kernel.dtype == torch.float32
    # every phase passes DC with (nearly) unit gain
    np.testing.assert_allclose(kernel.double().sum(-1).numpy(), 1.0, atol=2e-3)
    assert sinc_resample_kernel(44100, 16000, lowpass_filter_width=6)[0] is kernel  # cached


@pytest.mark.parametrize(("orig", "new"), [(44100, 16000), (16000, 44100), (48000, 44100)])
def test_sine_survives_and_length(orig: int, new: int) -> None:
    n = 4410 if orig == 44100 else orig // 10
    t = torch.arange(n, dtype=torch.float64) / orig
    x = torch.sin(2 * math.pi * 440.0 * t).float()
    y = resample(x, orig, new)
    assert y.shape == (math.ceil(new * n / orig),)
    ty = torch.arange(y.shape[0], dtype=torch.float64) / new
    ref = torch.sin(2 * math.pi * 440.0 * ty)
    middle = slice(y.shape[0] // 5, -y.shape[0] // 5)  # away from the zero-padded edges
    np.testing.assert_allclose(y[middle].double().numpy(), ref[middle].numpy(), atol=2e-3)


def test_removes_content_above_the_new_nyquist() -> None:
    t = torch.arange(44100, dtype=torch.float64) / 44100
    x = torch.sin(2 * math.pi * 12000.0 * t).float()  # above 8 kHz: must vanish at 16 kHz
    y = resample(x, 44100, 16000)
    assert float(y[2000:-2000].abs().max()) < 0.01


def test_batch_shape_and_identity() -> None:
    x = torch.randn(2, 3, 1000)
    y = resample(x, 22050, 44100)
    assert y.shape == (2, 3, 2000)
    torch.testing.assert_close(y[1, 2], resample(x[1, 2], 22050, 44100))
    assert resample(x, 16000, 16000) is x
    with pytest.raises(ValueError):
        resample(x, 16000.5, 44100)  # type: ignore[arg-type]
