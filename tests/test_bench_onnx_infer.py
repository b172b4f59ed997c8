"""Smoke run of bench/onnx_infer.py on its micro model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench import onnx_infer


def test_main_smoke(single_thread: None) -> None:
    results = onnx_infer.main(["--tiny", "--seconds", "0.4", "--repeats", "1", "--threads", "1"])
    frames = math.floor(0.4 * 44100 / 512)
    assert [r.name for r in results] == list(onnx_infer.PATHS)
    for r in results:
        assert r.audio.shape == (1, 1, frames * 512) and r.audio.dtype == np.float32
        assert r.seconds > 0 and r.cpu_seconds > 0 and r.audio_seconds == pytest.approx(frames * 512 / 44100)
    infer, variant, ort_audio, backend = (r.audio for r in results)
    assert float(np.abs(backend - infer).max()) <= 1e-4  # Svc's backend reproduces infer's own draws
    assert float(np.abs(variant).max()) > 1e-3  # real signal, not silence
    # Same prior noise; only the source's random phases and noise differ between the three.
    assert 0 < float(np.abs(ort_audio - variant).max()) < 0.2
    assert float(np.abs(infer - variant).max()) < 0.2


def test_flag_errors() -> None:
    with pytest.raises(SystemExit):
        onnx_infer.parse_args(["--repeats", "0"])
    with pytest.raises(SystemExit):
        onnx_infer.parse_args(["--seconds", "-1"])
