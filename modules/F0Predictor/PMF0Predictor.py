"""Praat autocorrelation pitch (parselmouth): the ``pm`` predictor."""
from __future__ import annotations

import numpy as np
import torch

from modules.F0Predictor.F0Predictor import F0Predictor, as_audio


class PMF0Predictor(F0Predictor):
    """``pm``: Praat ``To Pitch (ac)`` with a 0.6 voicing threshold, centred to p_len, gaps filled."""

    name = "pm"

    def compute_f0_uv(self, wav: np.ndarray | torch.Tensor,
                      p_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`F0Predictor.compute_f0_uv`; f0 is float64."""
        import parselmouth

        x = as_audio(wav)
        p_len = self._checked_frames(x.shape[0], p_len)
        # 4.1 converts the hop to ms and back; the same arithmetic gives the same float time step.
        time_step = self.hop_length / self.sampling_rate * 1000 / 1000
        pitch = parselmouth.Sound(x, self.sampling_rate).to_pitch_ac(
            time_step=time_step, voicing_threshold=0.6, pitch_floor=self.f0_min, pitch_ceiling=self.f0_max)
        f0 = pitch.selected_array["frequency"]
        # Praat gives fewer frames than p_len: zero-pad around (left gets the larger half). A longer
        # result is kept as it is, as in 4.1.
        missing = p_len - len(f0)
        if missing > 0:
            left = (missing + 1) // 2
            f0 = np.pad(f0, (left, missing - left), mode="constant")
        return self.interpolate_f0(f0)
