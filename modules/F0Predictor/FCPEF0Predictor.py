"""FCPE F0 predictor (pipeline.md §3.2.2): ``pretrain/fcpe.pt`` in the 4.1 format when present, else
the FCPE model bundled with the torchfcpe package (works offline)."""
from __future__ import annotations

import logging
import os

import torch

from modules.F0Predictor.RMVPEF0Predictor import SalienceF0Predictor

logger = logging.getLogger(__name__)


class FCPEF0Predictor(SalienceF0Predictor):
    """FCPE pitch (``--f0_predictor fcpe``), weights chosen when the predictor is built:

    1. ``pretrain/fcpe.pt`` in the working directory (a 4.1 ``{'config', 'model'}`` checkpoint);
       network size and mel settings come from its ``config``.
    2. otherwise torchfcpe's bundled ``fcpe_c_v001.pt``, read from the installed package folder
       (the package itself is never imported).

    Both give one F0 value per 10 ms mel frame, decoded with ``threshold`` (4.1's local average
    around the arg-max bin) and finished as in 4.1 (:func:`finish_f0`).

    Raises (at construction):
        CheckpointNotFoundError: neither source is there (a FileNotFoundError whose message says
            how to install torchfcpe).
        CheckpointError: the file is not a usable 4.1 FCPE checkpoint / torchfcpe model.
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
        from modules.F0Predictor.fcpe.inference import DEFAULT_PATH, FCPEInfer, FCPERunner

        self.fcpe: FCPERunner
        if os.path.isfile(DEFAULT_PATH):
            self.fcpe = FCPEInfer(DEFAULT_PATH, self.device)
        else:
            from modules.F0Predictor.fcpe.bundled import BundledFCPEInfer

            self.fcpe = BundledFCPEInfer(None, self.device)
            logger.info(
                "fcpe: %s not found, using the FCPE model bundled with torchfcpe (%s)",
                DEFAULT_PATH, self.fcpe.weights_path,
            )

    def model_f0(self, audio: torch.Tensor) -> torch.Tensor:
        """FCPE F0 [N // hop_size + 1] per mel frame of audio [N] at ``sampling_rate``."""
        return self.fcpe(audio, self.sampling_rate, self.threshold)[0, :, 0]
