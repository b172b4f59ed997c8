"""FCPE inference: checkpoint config, mel front end, network and decoding."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from modules.audio_resample import resample
from core.checkpoint import CheckpointError, CheckpointNotFoundError, load_state_dict_strict, safe_torch_load
from modules.F0Predictor.fcpe.model import FCPE
from modules.F0Predictor.salience import cents_to_hz, local_average
from modules.mel_processing import VocoderMel

DEFAULT_PATH = os.path.join("pretrain", "fcpe.pt")
# Zero crossings of the 4.1 resampler in front of FCPE (torchaudio Resample(..., lowpass_filter_width=128)).
RESAMPLE_WIDTH = 128
MEL_KEYS = ("sampling_rate", "num_mels", "n_fft", "win_size", "hop_size", "fmin", "fmax")
MODEL_KEYS = ("input_channel", "out_dims", "n_layers", "n_chans", "f0_max", "f0_min")


@dataclass(frozen=True)
class FCPEConfig:
    """The parts of a 4.1 ``fcpe.pt`` ``config`` that inference uses."""

    sampling_rate: int
    num_mels: int
    n_fft: int
    win_size: int
    hop_size: int
    fmin: float
    fmax: float
    input_channel: int
    out_dims: int
    n_layers: int
    n_chans: int
    f0_max: float
    f0_min: float

    @classmethod
    def from_checkpoint(cls, config: Any, source: str) -> "FCPEConfig":
        """Read ``config['mel']`` / ``config['model']``; variants 4.1 cannot run are refused.

        Raises:
            CheckpointError: a missing section or key, or ``use_siren`` / ``use_full`` /
                ``confidence`` set (4.1 rejects the first two and cannot decode the third).
        """
        values: dict[str, Any] = {}
        for section, keys in (("mel", MEL_KEYS), ("model", MODEL_KEYS)):
            part = config.get(section) if isinstance(config, Mapping) else None
            if not isinstance(part, Mapping):
                raise CheckpointError(
                    f"{source}: config has no '{section}' section (not a 4.1 FCPE checkpoint)"
                )
            for key in keys:
                if part.get(key) is None:
                    raise CheckpointError(f"{source}: config.{section}.{key} is missing")
                values[key] = part[key]
            if section == "model":
                for flag in ("use_siren", "use_full", "confidence"):
                    if part.get(flag):
                        raise CheckpointError(f"{source}: config.model.{flag} = true is not supported")
        return cls(**values)


def load_fcpe(
    model_path: str | os.PathLike = DEFAULT_PATH, device: torch.device | str = "cpu"
) -> tuple[FCPE, FCPEConfig]:
    """Build the network from the checkpoint config and load ``model`` strictly.

    Raises:
        CheckpointNotFoundError: no file (the message says where it comes from).
        CheckpointError: unreadable file, unusable config, or keys/shapes that do not fit.
    """
    path = os.fspath(model_path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(
            f"F0 predictor 'fcpe' needs {path} (relative to the working directory {os.getcwd()}): the "
            "FCPE pitch-model checkpoint {'config': ..., 'model': ...} released for so-vits-svc 4.1 "
            "(fcpe.pt); or use --f0_predictor pm/dio/harvest (no download)"
        )
    ckpt = safe_torch_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: expected an FCPE checkpoint {{'config': ..., 'model': state_dict}}")
    config = FCPEConfig.from_checkpoint(ckpt.get("config"), path)
    model = FCPE(
        config.input_channel, config.out_dims, config.n_layers, config.n_chans, config.f0_max, config.f0_min
    )
    load_state_dict_strict(model, ckpt["model"], source=path)
    return model.eval().to(device), config


class FCPERunner:
    """Mel front end, salience network and decoding of any FCPE model: audio -> F0 per mel frame.

    Shared by the 4.1 checkpoint (:class:`FCPEInfer`) and torchfcpe's bundled model
    (``modules.F0Predictor.fcpe.bundled``), whose front ends and decoders are the same.

    Args:
        model: salience network mel [B, n, num_mels] -> [B, n, out_dims], with a ``cent_table``
            [out_dims] buffer; already on ``device`` and in eval mode.
        config: mel settings (and network sizes) of ``model``.
        device: torch device for the network and front end.
    """

    def __init__(self, model: nn.Module, config: FCPEConfig, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model
        self.config = config
        c = config
        # The vocoder-style mel: (win - hop) // 2 reflect padding, not centred, magnitude eps 1e-9.
        self.stft = VocoderMel(
            c.sampling_rate, c.num_mels, c.n_fft, c.win_size, c.hop_size, c.fmin, c.fmax, 1e-5
        )

    def wav2mel(self, audio: Tensor, sample_rate: int) -> Tensor:
        """Log-mel [B, n, num_mels] of audio [B, N] at ``sample_rate``.

        n = N // hop_size + 1 with N counted BEFORE resampling, as in 4.1: when the mel is shorter
        exactly one copy of its last frame is appended, when longer it is cut.
        """
        audio = audio.to(self.device, torch.float32)
        resampled = resample(
            audio, sample_rate, self.config.sampling_rate, lowpass_filter_width=RESAMPLE_WIDTH
        )
        mel = self.stft.get_mel(resampled).transpose(1, 2)
        n_frames = audio.shape[-1] // self.config.hop_size + 1
        if n_frames > mel.shape[1]:
            mel = torch.cat((mel, mel[:, -1:, :]), dim=1)
        return mel[:, :n_frames]

    @torch.no_grad()
    def salience(self, mel: Tensor) -> Tensor:
        """Network output [B, n, out_dims] for mel [B, n, num_mels]."""
        return self.model(mel)

    def decode(self, salience: Tensor, threshold: float) -> Tensor:
        """Salience [B, n, out_dims] -> F0 [B, n, 1] in Hz, 0 where the peak salience <= threshold."""
        cents, peak = local_average(salience, self.model.cent_table, edge="clamp")
        f0 = cents_to_hz(cents)
        return torch.where(peak > threshold, f0, torch.zeros_like(f0)).unsqueeze(-1)

    def __call__(self, audio: Tensor, sr: int, threshold: float = 0.05) -> Tensor:
        """F0 [1, n, 1] (float32 Hz, 0 = unvoiced) of mono audio [N] at ``sr``."""
        return self.decode(self.salience(self.wav2mel(audio[None], sr)), threshold)


class FCPEInfer(FCPERunner):
    """FCPE pitch estimator on a 4.1 ``{'config': ..., 'model': ...}`` checkpoint.

    Args:
        model_path: the checkpoint.
        device: torch device for the network and front end.

    Raises:
        CheckpointNotFoundError, CheckpointError: as :func:`load_fcpe`.
    """

    def __init__(
        self, model_path: str | os.PathLike = DEFAULT_PATH, device: torch.device | str = "cpu"
    ) -> None:
        model, config = load_fcpe(model_path, device)
        super().__init__(model, config, device)
