"""RMVPE F0 predictor (pipeline.md §3.2.1), the preprocessing default; needs ``pretrain/rmvpe.pt``."""
from __future__ import annotations

import numpy as np
import torch

from modules.F0Predictor.F0Predictor import F0Predictor
from modules.F0Predictor.post import finish_f0

# 4.1 refuses an explicit p_len this far (in frames) from the audio's own frame count.
MAX_P_LEN_OFFSET = 4


def default_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available else CPU (4.1's choice for ``device=None``)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SalienceF0Predictor(F0Predictor):
    """Shared flow of the network predictors decoded from a salience map (rmvpe, fcpe).

    Subclasses provide :meth:`model_f0` (audio -> F0 per model frame); this class turns it into the
    4.1 outputs with :func:`finish_f0`.
    """

    def __init__(
        self,
        hop_length: int = 512,
        f0_min: float = 50,
        f0_max: float = 1100,
        sampling_rate: int = 44100,
        device: str | torch.device | None = None,
        threshold: float = 0.05,
    ) -> None:
        super().__init__(hop_length, f0_min, f0_max, sampling_rate)
        self.device = default_device(device)
        self.threshold = threshold

    def model_f0(self, audio: torch.Tensor) -> torch.Tensor:
        """F0 [M] in Hz per model frame (0 = unvoiced) of float32 audio [N] on ``self.device``."""
        raise NotImplementedError

    def _prepare(self, wav: np.ndarray | torch.Tensor, p_len: int | None) -> tuple[torch.Tensor, int]:
        audio = torch.as_tensor(wav, dtype=torch.float32).to(self.device)
        own = audio.shape[0] // self.hop_length
        if p_len is None:
            return audio, own
        if abs(p_len - own) >= MAX_P_LEN_OFFSET:
            raise ValueError(
                f"pad length error: p_len {p_len} is {abs(p_len - own)} frames away from the "
                f"{own} frames of {audio.shape[0]} samples (at most {MAX_P_LEN_OFFSET - 1} allowed)"
            )
        return audio, p_len

    def compute_f0_uv(
        self, wav: np.ndarray | torch.Tensor, p_len: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (f0 [p_len], uv [p_len]) for mono audio [N] at ``sampling_rate``.

        f0 is float64 (gaps interpolated), uv float32 (1 = voiced); when no frame is voiced both are
        float64 zeros (4.1).

        Raises:
            ValueError: ``p_len`` differs from ``N // hop_length`` by 4 frames or more.
        """
        audio, p_len = self._prepare(wav, p_len)
        return finish_f0(self.model_f0(audio), p_len, self.hop_length, self.sampling_rate)

    def compute_f0(  # type: ignore[override]
        self, wav: np.ndarray | torch.Tensor, p_len: int | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Return the interpolated f0 [p_len] (float64) of :meth:`compute_f0_uv`.

        As in 4.1, a clip with no voiced frame returns the TUPLE (zeros [p_len], zeros [p_len]),
        both float64, instead of an array.
        """
        audio, p_len = self._prepare(wav, p_len)
        raw = self.model_f0(audio)
        f0, uv = finish_f0(raw, p_len, self.hop_length, self.sampling_rate)
        if not bool(torch.as_tensor(raw).ne(0).any()):
            return f0, uv
        return f0


class RMVPEF0Predictor(SalienceF0Predictor):
    """RMVPE pitch (``--f0_predictor rmvpe``), weights from ``pretrain/rmvpe.pt`` in the working
    directory, loaded when the predictor is built.

    Raises (at construction):
        CheckpointNotFoundError: ``pretrain/rmvpe.pt`` is missing (a FileNotFoundError).
        CheckpointError: the file does not hold a matching ``{'model': state_dict}``.
    """

    name = "rmvpe"

    def __init__(
        self,
        hop_length: int = 512,
        f0_min: float = 50,
        f0_max: float = 1100,
        sampling_rate: int = 44100,
        device: str | torch.device | None = None,
        threshold: float = 0.05,
    ) -> None:
        super().__init__(hop_length, f0_min, f0_max, sampling_rate, device, threshold)
        from modules.F0Predictor.rmvpe.inference import DEFAULT_PATH, RMVPE

        self.model = RMVPE(DEFAULT_PATH, self.device)

    def model_f0(self, audio: torch.Tensor) -> torch.Tensor:
        """RMVPE F0 [1 + N16 // 160] (16 kHz, 10 ms frames) of audio [N] at ``sampling_rate``."""
        return self.model.infer_from_audio(audio, self.sampling_rate, self.threshold)
