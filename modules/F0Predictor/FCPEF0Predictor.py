"""FCPE F0 predictor (pipeline.md §3.2.2); needs ``pretrain/fcpe.pt`` in the 4.1 format."""
from __future__ import annotations

import torch

from modules.F0Predictor.RMVPEF0Predictor import SalienceF0Predictor


class FCPEF0Predictor(SalienceF0Predictor):
    """FCPE pitch (``--f0_predictor fcpe``), checkpoint ``pretrain/fcpe.pt`` in the working directory,
    loaded when the predictor is built. Network size and mel settings come from its ``config``.

    Raises (at construction):
        CheckpointNotFoundError: ``pretrain/fcpe.pt`` is missing (a FileNotFoundError).
        CheckpointError: the file is not a usable 4.1 FCPE checkpoint.
    """

    name = "fcpe"

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
        from modules.F0Predictor.fcpe.inference import DEFAULT_PATH, FCPEInfer

        self.fcpe = FCPEInfer(DEFAULT_PATH, self.device)

    def model_f0(self, audio: torch.Tensor) -> torch.Tensor:
        """FCPE F0 [N // hop_size + 1] per mel frame of audio [N] at ``sampling_rate``."""
        return self.fcpe(audio, self.sampling_rate, self.threshold)[0, :, 0]
