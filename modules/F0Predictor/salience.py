"""Predictors whose network scores pitch bins per frame (rmvpe, fcpe) and the decoding they share: a
salience-weighted average of the bin pitches around each frame's arg-max bin ("local average"); frames
whose peak salience is at or below the threshold are unvoiced."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from modules.F0Predictor.F0Predictor import NeuralF0Predictor, finish_f0

LOCAL_RADIUS = 4  # bins on each side of the arg-max (9 in all)


def local_average(salience: Tensor, bin_values: Tensor, edge: Literal["zero", "clamp"]) -> tuple[Tensor, Tensor]:
    """Salience-weighted mean of ``bin_values`` [C] (cents) over the 9 bins centred on each frame's arg-max
    of ``salience`` [..., C]: (average [...] in the dtype of ``salience``, peak salience [...]).

    A window reaching past the first/last bin sees zero salience there (``edge="zero"``, RMVPE) or the
    clamped edge bin once per outside position (``"clamp"``, FCPE).
    """
    n_bins = salience.shape[-1]
    peak, centre = torch.max(salience, dim=-1, keepdim=True)
    index = centre + torch.arange(-LOCAL_RADIUS, LOCAL_RADIUS + 1, device=salience.device)
    inside = (index >= 0) & (index < n_bins)
    index = index.clamp(0, n_bins - 1)
    weights = torch.gather(salience, -1, index)
    if edge == "zero":
        weights = weights * inside
    elif edge != "clamp":
        raise ValueError(f"edge must be 'zero' or 'clamp', got {edge!r}")
    values = bin_values.to(salience)[index]
    return torch.sum(weights * values, dim=-1) / torch.sum(weights, dim=-1), peak.squeeze(-1)


def cents_to_hz(cents: Tensor) -> Tensor:
    """Cents relative to 10 Hz -> Hz: 10 * 2^(cents / 1200)."""
    return 10.0 * 2.0 ** (cents / 1200.0)


class SalienceF0Predictor(NeuralF0Predictor):
    """rmvpe / fcpe: :meth:`model_f0` (audio -> F0 per model frame) finished by :func:`finish_f0`."""

    def model_f0(self, audio: Tensor) -> Tensor:
        """F0 [M] in Hz per model frame (0 = unvoiced) of float32 audio [N] on ``self.device``."""
        raise NotImplementedError

    def _raw_and_frames(self, wav: np.ndarray | Tensor, p_len: int | None) -> tuple[Tensor, int]:
        audio = torch.as_tensor(wav, dtype=torch.float32).to(self.device)
        p_len = self._checked_frames(audio.shape[0], p_len)
        return self.model_f0(audio), p_len

    def compute_f0_uv(self, wav: np.ndarray | Tensor, p_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`F0Predictor.compute_f0_uv`; f0 float64, uv float32, float64 zeros if all unvoiced."""
        raw, p_len = self._raw_and_frames(wav, p_len)
        return finish_f0(raw, p_len, self.hop_length, self.sampling_rate)

    def compute_f0(self, wav: np.ndarray | Tensor,  # type: ignore[override]
                   p_len: int | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """See :meth:`F0Predictor.compute_f0` (the tuple when no model frame is voiced)."""
        raw, p_len = self._raw_and_frames(wav, p_len)
        f0, uv = finish_f0(raw, p_len, self.hop_length, self.sampling_rate)
        return f0 if bool(raw.ne(0).any()) else (f0, uv)
