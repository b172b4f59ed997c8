"""Enhancer (modules/enhancer.py) against the 4.1 fixture `nsf_hifigan/` (enh_* arrays).

At 44.1 kHz and adaptive key 0 every resampling step is the identity, so the recording pins the
mel -> F0 re-timing -> vocoder path; resampling (modules/audio_resample.py, tested there) and the
adaptive key are checked by output length and by the F0 handed to the vocoder.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_fixture
from inference.enhancer import Enhancer
from conftest import zeroed_rng

MODEL = FIXTURES / "nsf_hifigan" / "model_dir" / "model"
AUDIO_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> tuple[dict, dict[str, np.ndarray]]:
    return load_fixture("nsf_hifigan")


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    return Enhancer("nsf-hifigan", MODEL, device="cpu")


def _capture_f0(enhancer: Enhancer, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record the F0 [1, frames] the enhancer hands to the vocoder."""
    seen: list[torch.Tensor] = []
    original = enhancer.enhancer.forward

    def spy(mel: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        seen.append(f0.clone())
        return original(mel, f0)

    monkeypatch.setattr(enhancer.enhancer, "forward", spy)
    return seen


def test_enhance_matches_fixture_and_keeps_caller_f0(fixture, enhancer) -> None:
    meta, arrays = fixture
    f0 = torch.from_numpy(arrays["enh_in_f0"].copy())
    before = f0.clone()
    with zeroed_rng() as calls:
        audio, rate = enhancer.enhance(torch.from_numpy(arrays["in_signal"])[None], 44100, f0, 512,
                                       adaptive_key=0)
    assert rate == meta["enhancer"]["returned_sample_rate"] == 44100
    assert audio.shape == arrays["enh_zn_audio"].shape
    np.testing.assert_allclose(audio.numpy(), arrays["enh_zn_audio"], atol=AUDIO_TOL, rtol=0)
    assert [kind for kind, _ in calls] == ["rand", "randn"]
    assert torch.equal(f0, before)


def test_adaptive_key_scales_f0_without_touching_caller(enhancer, monkeypatch) -> None:
    # Key +12: the audio is worked on at 88200 Hz "nominal 44100", so F0 is halved and every
    # source frame spans two vocoder frames; 4.1 also halved the caller's tensor.
    seen = _capture_f0(enhancer, monkeypatch)
    n = 16384
    audio = 0.3 * torch.sin(2 * math.pi * 220 * torch.arange(n) / 44100)[None]
    f0 = torch.linspace(200.0, 300.0, n // 512 + 1).view(1, -1, 1)
    before = f0.clone()
    out, rate = enhancer.enhance(audio, 44100, f0, 512, adaptive_key=12)
    assert torch.equal(f0, before)
    assert rate == 44100
    frames = (2 * n) // 512  # mel frames of the signal resampled to 88200 Hz
    assert out.shape == (math.ceil(frames * 512 / 2),)
    fed = seen[0][0]
    assert fed.shape == (frames + 1,)  # len // hop + 1 frames; the vocoder uses the first `frames`
    # vocoder frame j sits at source frame j / 2; linear interpolation of the halved F0
    expected = np.interp(np.arange(frames + 1) / 2, np.arange(f0.size(1)), 0.5 * f0[0, :, 0].numpy())
    np.testing.assert_allclose(fed.numpy(), expected, atol=1e-3, rtol=0)


def test_auto_adaptive_key(enhancer, monkeypatch) -> None:
    seen = _capture_f0(enhancer, monkeypatch)
    audio = torch.zeros(1, 8192)
    f0 = torch.full((1, 8192 // 512 + 1, 1), 800.0)  # 0.89 semitones above 760 Hz -> key 1
    enhancer.enhance(audio, 44100, f0, 512, adaptive_key="auto")
    assert torch.allclose(seen[0], torch.tensor(800.0 * 44100 / 46700))
    with pytest.raises(ValueError, match="auto"):
        enhancer.enhance(audio, 44100, f0, 512, adaptive_key="high")  # type: ignore[arg-type]


def test_22050_input_comes_back_at_vocoder_rate(enhancer) -> None:
    n = 11025
    audio = 0.3 * torch.sin(2 * math.pi * 220 * torch.arange(n) / 22050)[None]
    f0 = torch.full((1, n // 256 + 1, 1), 220.0)
    out, rate = enhancer.enhance(audio, 22050, f0, 256)
    assert rate == 44100
    assert out.shape == ((2 * n) // 512 * 512,)
    assert torch.isfinite(out).all() and out.abs().max() > 1e-3


def test_silence_front_is_skipped_and_padded(enhancer, monkeypatch) -> None:
    seen = _capture_f0(enhancer, monkeypatch)
    n = 16384
    audio = 0.3 * torch.sin(2 * math.pi * 220 * torch.arange(n) / 44100)[None]
    f0 = torch.arange(n // 512 + 1, dtype=torch.float32).view(1, -1, 1) + 100
    out, _ = enhancer.enhance(audio, 44100, f0, 512, silence_front=0.1)
    start = int(0.1 * 44100 / 512)  # 8 frames = 4096 samples skipped
    assert out.shape == (start * 512 + (n - start * 512) // 512 * 512,)
    assert torch.all(out[: start * 512] == 0)
    assert seen[0][0, 0] == 100 + start


def test_unknown_enhancer_type() -> None:
    with pytest.raises(ValueError, match="nsf-hifigan"):
        Enhancer("ddsp", MODEL, device="cpu")  # type: ignore[arg-type]
