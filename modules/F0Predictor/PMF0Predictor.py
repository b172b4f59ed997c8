"""Praat autocorrelation pitch (parselmouth), the 4.1 ``pm`` predictor."""
from __future__ import annotations

import numpy as np
import torch

from modules.F0Predictor.F0Predictor import F0Predictor, as_float64_audio


class PMF0Predictor(F0Predictor):
    """``pm``: Praat ``To Pitch (ac)`` with a 0.6 voicing threshold (pipeline.md §3.2)."""

    name = "pm"

    def compute_f0_uv(
        self, wav: np.ndarray | torch.Tensor, p_len: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (f0 [p_len] float64 Hz, uv [p_len] float32) for mono audio [N].

        Raises:
            ValueError: when ``p_len`` differs from ``N // hop_length`` by 4 frames or more.
        """
        import parselmouth

        x = as_float64_audio(wav)
        expected = x.shape[0] // self.hop_length
        if p_len is None:
            p_len = expected
        elif abs(p_len - expected) >= 4:
            raise ValueError(
                f"pm: p_len {p_len} is too far from {expected} frames of {x.shape[0]} samples"
            )
        # 4.1 converts the hop to ms and back; keep that arithmetic for the same float time step.
        time_step = self.hop_length / self.sampling_rate * 1000 / 1000
        pitch = parselmouth.Sound(x, self.sampling_rate).to_pitch_ac(
            time_step=time_step,
            voicing_threshold=0.6,
            pitch_floor=self.f0_min,
            pitch_ceiling=self.f0_max,
        )
        f0 = pitch.selected_array["frequency"]
        # Praat returns fewer frames than p_len: centre by zero padding (left gets the smaller half).
        # A longer result is kept as it is (quirks.md A.4).
        missing = p_len - len(f0)
        if missing > 0:
            left = (missing + 1) // 2
            f0 = np.pad(f0, (left, missing - left), mode="constant")
        return self.interpolate_f0(f0)
