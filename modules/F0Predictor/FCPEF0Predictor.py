"""FCPE: ``pretrain/fcpe.pt`` (the 4.1 checkpoint) when present, else the model bundled with torchfcpe."""
from __future__ import annotations

import logging
import os

import torch

from modules.F0Predictor.fcpe.bundled import BundledFCPEInfer
from modules.F0Predictor.fcpe.inference import DEFAULT_PATH, FCPEInfer, FCPERunner
from modules.F0Predictor.salience import SalienceF0Predictor

logger = logging.getLogger(__name__)


class FCPEF0Predictor(SalienceF0Predictor):
    """``fcpe``, weights chosen at construction: ``pretrain/fcpe.pt`` in the working directory (network
    size and mel settings from its ``config``), else torchfcpe's ``fcpe_c_v001.pt`` read from the installed
    package folder without importing it (works offline). Raises CheckpointNotFoundError (neither there;
    says how to install torchfcpe) or CheckpointError (not a usable FCPE checkpoint / torchfcpe model).
    """

    name = "fcpe"

    def _load_model(self) -> None:
        self.fcpe: FCPERunner
        if os.path.isfile(DEFAULT_PATH):
            self.fcpe = FCPEInfer(DEFAULT_PATH, self.device)
            return
        self.fcpe = BundledFCPEInfer(None, self.device)
        logger.info("fcpe: %s not found, using the FCPE model bundled with torchfcpe (%s)", DEFAULT_PATH,
                    self.fcpe.weights_path)

    def model_f0(self, audio: torch.Tensor) -> torch.Tensor:
        """F0 [N // hop_size + 1] per mel frame of audio [N] at ``sampling_rate``."""
        return self.fcpe(audio, self.sampling_rate, self.threshold)[0, :, 0]
