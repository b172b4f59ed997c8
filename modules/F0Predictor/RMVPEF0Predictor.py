"""RMVPE, the preprocessing default predictor; weights from ``pretrain/rmvpe.pt`` in the working directory."""
from __future__ import annotations

import torch

from modules.F0Predictor.rmvpe.inference import DEFAULT_PATH, RMVPE
from modules.F0Predictor.salience import SalienceF0Predictor


class RMVPEF0Predictor(SalienceF0Predictor):
    """``rmvpe``; the weights load at construction: CheckpointNotFoundError (a FileNotFoundError) without
    ``pretrain/rmvpe.pt``, CheckpointError when it does not hold a matching ``{'model': state_dict}``."""

    name = "rmvpe"

    def _load_model(self) -> None:
        self.model = RMVPE(DEFAULT_PATH, self.device)

    def model_f0(self, audio: torch.Tensor) -> torch.Tensor:
        """F0 [1 + N16 // 160] per 10 ms frame of audio [N] at ``sampling_rate``."""
        return self.model.infer_from_audio(audio, self.sampling_rate, self.threshold)
