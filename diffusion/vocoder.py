"""The diffusion side's vocoder: an NSF-HiFiGAN release (`pretrain/nsf_hifigan/`) with 4.1's interface."""
from __future__ import annotations

import torch
from torch import Tensor

from core.config import PathLike
from core.device import resolve_device
from modules.audio_resample import resample
from vdecoder.nsf_hifigan.models import NsfHifiGAN

__all__ = ["VOCODERS", "Vocoder"]

# `vocoder.type` -> factor on the natural-log mel before the generator (log10 vocoders: log10(e)).
VOCODERS: dict[str, float] = {"nsf-hifigan": 1.0, "nsf-hifigan-log10": 0.434294}
# 4.1 resampled vocoder input with torchaudio's Resample(..., lowpass_filter_width=128).
_RESAMPLE_WIDTH = 128


class Vocoder:
    """NSF-HiFiGAN of `vocoder.type` (a key of VOCODERS) from the release `model` file with its `config.json`;
    ValueError for an unknown type, VocoderNotFoundError / VocoderLoadError for missing or unfit files."""

    def __init__(self, vocoder_type: str, vocoder_ckpt: PathLike,
                 device: str | torch.device | None = None) -> None:
        if vocoder_type not in VOCODERS:
            raise ValueError(f"unknown vocoder type {vocoder_type!r} (vocoder.type); valid: {', '.join(VOCODERS)}")
        self.vocoder_type = vocoder_type
        self.mel_scale = VOCODERS[vocoder_type]
        self.vocoder = NsfHifiGAN(vocoder_ckpt, device=resolve_device(device))
        self.device = self.vocoder.device
        self.vocoder_sample_rate = self.vocoder.sample_rate
        self.vocoder_hop_size = self.vocoder.hop_size
        self.dimension = self.vocoder.dimension

    def extract(self, audio: Tensor, sample_rate: int, keyshift: float = 0) -> Tensor:
        """Log-mel [B, T, dimension] of audio [B, N] at `sample_rate`; keyshift in semitones."""
        audio = audio.to(self.device)
        if int(sample_rate) != self.vocoder_sample_rate:
            audio = resample(audio, int(sample_rate), self.vocoder_sample_rate,
                             lowpass_filter_width=_RESAMPLE_WIDTH)
        return self.vocoder.extract(audio, keyshift=keyshift)

    def infer(self, mel: Tensor, f0: Tensor) -> Tensor:
        """mel [B, T, dimension] (natural log), f0 [B, T', 1] Hz with T' >= T -> audio [B, 1, T * hop]."""
        return self.vocoder(mel * self.mel_scale, f0).unsqueeze(1)
