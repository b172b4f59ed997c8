"""WORLD Harvest (pyworld), the 4.1 ``harvest`` predictor."""
from __future__ import annotations

import numpy as np

from modules.F0Predictor.F0Predictor import WorldF0Predictor


class HarvestF0Predictor(WorldF0Predictor):
    """``harvest``: Harvest + StoneMask (no rounding), resized and gap-interpolated."""

    name = "harvest"

    def _estimate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import pyworld

        return pyworld.harvest(
            x,
            fs=self.sampling_rate,
            f0_floor=self.f0_min,
            f0_ceil=self.f0_max,
            frame_period=self._frame_period_ms(),
        )
