"""WORLD DIO (pyworld), the 4.1 ``dio`` predictor."""
from __future__ import annotations

import numpy as np

from modules.F0Predictor.F0Predictor import WorldF0Predictor


class DioF0Predictor(WorldF0Predictor):
    """``dio``: DIO + StoneMask, values rounded to 0.1 Hz, resized and gap-interpolated."""

    name = "dio"
    round_to_tenth = True

    def _estimate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import pyworld

        return pyworld.dio(
            x,
            fs=self.sampling_rate,
            f0_floor=self.f0_min,
            f0_ceil=self.f0_max,
            frame_period=self._frame_period_ms(),
        )
