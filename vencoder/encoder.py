"""Base class of the speech ("content") encoders and the errors they share."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod

import torch

from core.checkpoint import CheckpointNotFoundError
from core.device import resolve_device

__all__ = ["PretrainNotFoundError", "SpeechEncoder", "require_pretrain"]

PathLike = str | os.PathLike


class PretrainNotFoundError(CheckpointNotFoundError):
    """A pretrained encoder file is missing (also catchable as FileNotFoundError)."""


def require_pretrain(path: PathLike, what: str) -> str:
    """Return `path` as a string, or raise PretrainNotFoundError saying which file, where and why.

    Args:
        path: expected file, e.g. `pretrain/checkpoint_best_legacy_500.pt`.
        what: what the file is and who needs it, e.g. "ContentVec, needed by speech encoder vec768l12".
    """
    name = os.fspath(path)
    if os.path.isfile(name):
        return name
    state = "is a directory, not a file" if os.path.isdir(name) else "is missing"
    raise PretrainNotFoundError(
        f"{name} {state}: it is the {what}. Download it and put it at {os.path.abspath(name)} "
        "(file name exactly as shown; pretrain/README.md lists the downloads)."
    )


class SpeechEncoder(ABC):
    """A pretrained content encoder: 16 kHz waveform in, unit features out.

    Attributes:
        dim: feature size C of the output (768 for vec768l12, ...; smaller for test checkpoints).
        device: where the model runs; `encoder` returns its output there.
    """

    dim: int
    device: torch.device

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = resolve_device(device)

    @staticmethod
    def to_mono(wav: torch.Tensor) -> torch.Tensor:
        """[N] or [N, channels] -> float32 [N]; several channels are averaged (as 4.1 does)."""
        if wav.dim() == 2:
            wav = wav.mean(-1)
        if wav.dim() != 1:
            raise ValueError(f"speech encoder input must be [N] or [N, 2] (16 kHz samples), got {list(wav.shape)}")
        return wav.to(torch.float32)

    @abstractmethod
    def encoder(self, wav: torch.Tensor) -> torch.Tensor:
        """Encode 16 kHz audio.

        Args:
            wav: [N] mono or [N, 2] stereo float waveform at 16 kHz (values about -1..1).
        Returns:
            [1, dim, frames] float32 on `self.device`.
        """
