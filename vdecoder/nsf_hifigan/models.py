"""Stand-alone NSF-HiFiGAN vocoder in the OpenVPI release layout (`pretrain/nsf_hifigan/`).

A release is a torch file `model` holding `{'generator': state_dict}` (weight-norm `weight_g` /
`weight_v` keys) with its `config.json` beside it. The network is the project's NSF-HiFiGAN
`Generator` with the frame-rate harmonic source and the release's padding, without speakers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from core.checkpoint import CheckpointError, load_state_dict_strict, safe_torch_load
from core.config import HParams, load_config
from core.device import resolve_device
from modules.mel_processing import VocoderMel
from vdecoder.hifigan.models import Generator

__all__ = ["NsfHifiGAN", "VocoderLoadError", "VocoderNotFoundError", "build_generator", "load_model"]

PathLike = str | os.PathLike

_WHAT_FOR = (
    "The stand-alone NSF-HiFiGAN vocoder is needed by the enhancer (-eh), by shallow diffusion and "
    "by diffusion mel extraction. Put the release's `model` file and its `config.json` together in "
    "pretrain/nsf_hifigan/ (the 2024.02 release ships `model.ckpt`: rename it to `model`)."
)


class VocoderLoadError(RuntimeError):
    """The vocoder file or its config cannot be read or does not fit the network."""


class VocoderNotFoundError(VocoderLoadError, FileNotFoundError):
    """The vocoder `model` file or its `config.json` is missing (also a FileNotFoundError)."""


def build_generator(h: HParams | Mapping[str, Any]) -> Generator:
    """The vocoder network described by a release `config.json` (weight norm still applied).

    Input log-mel [B, num_mels, T] and F0 [B, T] (Hz) -> audio [B, 1, T * prod(upsample_rates)].
    """
    return Generator(
        in_channels=int(h["num_mels"]),
        resblock=str(h["resblock"]),
        resblock_kernel_sizes=list(h["resblock_kernel_sizes"]),
        resblock_dilation_sizes=[list(d) for d in h["resblock_dilation_sizes"]],
        upsample_rates=list(h["upsample_rates"]),
        upsample_initial_channel=int(h["upsample_initial_channel"]),
        upsample_kernel_sizes=list(h["upsample_kernel_sizes"]),
        sampling_rate=int(h["sampling_rate"]),
        gin_channels=0,
        source="frame",
    )


def load_model(model_path: PathLike, device: str | torch.device = "cpu") -> tuple[Generator, HParams]:
    """Load a release vocoder: `model_path` plus the `config.json` in the same folder.

    Returns (generator in eval mode on `device` with weight norm folded, config `h`).
    Raises:
        VocoderNotFoundError: `model_path` or its `config.json` is missing.
        VocoderLoadError: unreadable or unsafe file, not a release file, or any missing, unexpected
            or mis-shaped tensor (parametrized weight-norm names are accepted).
    """
    path = Path(model_path)
    config_path = path.parent / "config.json"
    if not path.is_file():
        raise VocoderNotFoundError(f"NSF-HiFiGAN vocoder file not found: {path}. {_WHAT_FOR}")
    if not config_path.is_file():
        raise VocoderNotFoundError(
            f"NSF-HiFiGAN vocoder config not found: {config_path} (it must sit next to {path.name}). "
            f"{_WHAT_FOR}")
    h = load_config(config_path)
    try:
        generator = build_generator(h)
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise VocoderLoadError(f"{config_path} does not describe an NSF-HiFiGAN vocoder: {exc}") from exc
    try:
        checkpoint = safe_torch_load(path, map_location=device)
    except CheckpointError as exc:
        raise VocoderLoadError(f"cannot read the NSF-HiFiGAN vocoder file: {exc}") from exc
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("generator"), Mapping):
        found = (f"keys {list(checkpoint)[:5]}" if isinstance(checkpoint, Mapping)
                 else type(checkpoint).__name__)
        raise VocoderLoadError(
            f"{path} is not an NSF-HiFiGAN release file: expected a dict with a 'generator' state "
            f"dict, found {found}")
    try:
        load_state_dict_strict(generator, checkpoint["generator"], source=str(path))
    except CheckpointError as exc:
        raise VocoderLoadError(
            f"NSF-HiFiGAN vocoder file {path} does not fit the network described by {config_path}; use "
            f"the config.json released with this model file. Details: {exc}") from exc
    generator.remove_weight_norm()
    return generator.to(device).eval(), h


class NsfHifiGAN(nn.Module):
    """Release vocoder plus its mel extractor, with time-major mels as the diffusion side uses them.

    Args:
        model_path: the release `model` file (its `config.json` must be in the same folder).
        device: where the network runs; None / "auto" picks CUDA when available, else CPU.
    """

    def __init__(self, model_path: PathLike, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.device = resolve_device(device)
        self.model, self.h = load_model(model_path, device=self.device)
        h = self.h
        self.mel = VocoderMel(int(h.sampling_rate), int(h.num_mels), int(h.n_fft), int(h.win_size),
                              int(h.hop_size), float(h.fmin), float(h.fmax))

    @property
    def sample_rate(self) -> int:
        """Audio rate of the vocoder (config `sampling_rate`)."""
        return int(self.h.sampling_rate)

    @property
    def hop_size(self) -> int:
        """Samples per mel frame (config `hop_size`)."""
        return int(self.h.hop_size)

    @property
    def dimension(self) -> int:
        """Number of mel bins (config `num_mels`)."""
        return int(self.h.num_mels)

    def extract(self, audio: Tensor, keyshift: float = 0) -> Tensor:
        """Log-mel [B, T, n_mels] (T = N // hop_size) of audio [B, N] at `sample_rate`."""
        return self.mel.get_mel(audio.to(self.device), keyshift=keyshift).transpose(1, 2)

    @torch.no_grad()
    def forward(self, mel: Tensor, f0: Tensor) -> Tensor:
        """mel [B, T, n_mels], f0 [B, T', 1] or [B, T'] in Hz with T' >= T -> audio [B, T * hop].

        Only the first T F0 frames are used, as the release's callers do.
        """
        if f0.dim() == 3:
            f0 = f0[..., 0]
        frames = mel.size(1)
        if f0.size(1) < frames:
            raise ValueError(f"f0 has {f0.size(1)} frames but the mel has {frames}")
        audio = self.model(mel.transpose(1, 2).to(self.device), f0[:, :frames].to(self.device))
        return audio.squeeze(1)
