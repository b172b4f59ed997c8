"""Stand-alone NSF-HiFiGAN vocoder in the OpenVPI release layout (`pretrain/nsf_hifigan/`).

The release is two files in one folder: `model`, a torch file `{'generator': state_dict}` with
weight-norm (`weight_g` / `weight_v`) keys, and `config.json` beside it (formats.md §12). The network
is the project's one NSF-HiFiGAN `Generator` built with the frame-rate harmonic source and the
release's padding (`source="frame"`), without speaker conditioning.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from core.config import HParams, load_config
from modules.mel_processing import VocoderMel
from vdecoder.hifigan.models import Generator

__all__ = ["NsfHifiGAN", "VocoderLoadError", "VocoderNotFoundError", "build_generator", "load_model"]

PathLike = str | os.PathLike

_WHAT_FOR = (
    "The stand-alone NSF-HiFiGAN vocoder is needed by the enhancer (-eh), by shallow diffusion and "
    "by diffusion mel extraction. Put the release's `model` file and its `config.json` together in "
    "pretrain/nsf_hifigan/ (the 2024.02 release ships `model.ckpt`: rename it to `model`)."
)
# Names written by torch's parametrization-based weight norm, mapped to the release's legacy names.
_PARAMETRIZED = {".parametrizations.weight.original0": ".weight_g",
                 ".parametrizations.weight.original1": ".weight_v"}


class VocoderLoadError(RuntimeError):
    """The vocoder file or its config cannot be read or does not fit the network."""


class VocoderNotFoundError(VocoderLoadError, FileNotFoundError):
    """The vocoder `model` file or its `config.json` is missing (also a FileNotFoundError)."""


def _torch_load(path: Path, device: str | torch.device) -> Any:
    # Tensors-only unpickling: a release file needs nothing else, and nothing in it gets executed.
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise VocoderLoadError(f"cannot read NSF-HiFiGAN vocoder file {path}: {exc}") from exc


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


def _legacy_names(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    renamed = {}
    for key, value in state.items():
        for new, old in _PARAMETRIZED.items():
            if key.endswith(new):
                key = key[: -len(new)] + old
        renamed[key] = value
    return renamed


def _check_fit(model: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """Raise one error listing every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    lines = [f"NSF-HiFiGAN vocoder file {path} does not fit the network described by "
             f"{path.parent / 'config.json'}:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("mis-shaped keys", shapes)):
        if items:
            shown = ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10 else "")
            lines.append(f"  {title}: {shown}")
    raise VocoderLoadError("\n".join(lines))


def load_model(model_path: PathLike, device: str | torch.device = "cpu") -> tuple[Generator, HParams]:
    """Load a release vocoder: `model_path` plus the `config.json` in the same folder.

    The state dict is loaded strictly (any missing, unexpected or mis-shaped key is an error naming
    the file), weight norm is folded and the network is put in eval mode on `device`.
    Returns (generator, h) where `h` is the config.
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

    checkpoint = _torch_load(path, device)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("generator"), Mapping):
        found = (f"keys {list(checkpoint)[:5]}" if isinstance(checkpoint, Mapping)
                 else type(checkpoint).__name__)
        raise VocoderLoadError(
            f"{path} is not an NSF-HiFiGAN release file: expected a dict with a 'generator' state "
            f"dict, found {found}")
    state = _legacy_names(checkpoint["generator"])
    _check_fit(generator, state, path)
    generator.load_state_dict(state, strict=True)
    generator.remove_weight_norm()
    return generator.to(device).eval(), h


class NsfHifiGAN(nn.Module):
    """Release vocoder plus its mel extractor, with time-major mels as the diffusion side uses them.

    Args:
        model_path: the release `model` file (its `config.json` must be in the same folder).
        device: where the network runs; None picks CUDA when available, else CPU.
    """

    def __init__(self, model_path: PathLike, device: str | torch.device | None = None) -> None:
        super().__init__()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
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
