"""The diffusion side's vocoder: NSF-HiFiGAN release (`pretrain/nsf_hifigan/`) plus its mel front end.

`Vocoder.extract` turns audio into the log-mel the diffusion model works on (resampling to the vocoder
rate first), `Vocoder.infer` turns a mel and F0 back into audio. Both network and mel come from
`vdecoder.nsf_hifigan.models.NsfHifiGAN`; this class only adds the 4.1 interface, the resampling and
the `nsf-hifigan-log10` variant (a vocoder trained on log10 mels: natural-log mels are scaled by
log10(e) = 0.434294 before it).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from modules.audio_resample import resample
from vdecoder.nsf_hifigan.models import NsfHifiGAN

__all__ = ["VOCODERS", "Vocoder"]

PathLike = str | os.PathLike

# `vocoder.type` -> factor applied to the natural-log mel before the generator.
VOCODERS: dict[str, float] = {
    "nsf-hifigan": 1.0,
    "nsf-hifigan-log10": 0.434294,
}
# 4.1 resampled vocoder input with torchaudio's Resample(..., lowpass_filter_width=128).
_RESAMPLE_WIDTH = 128


class Vocoder:
    """NSF-HiFiGAN with the 4.1 diffusion interface.

    Args:
        vocoder_type: `vocoder.type` of the diffusion config (a key of VOCODERS).
        vocoder_ckpt: the release `model` file; its `config.json` must be in the same folder.
        device: where it runs; None picks CUDA when available, else CPU.
    Raises:
        ValueError: unknown vocoder type (the message lists the valid ones).
        VocoderNotFoundError / VocoderLoadError: from the release loader (missing or unfit files).
    """

    def __init__(self, vocoder_type: str, vocoder_ckpt: PathLike, device: str | torch.device | None = None) -> None:
        if vocoder_type not in VOCODERS:
            raise ValueError(f"unknown vocoder type {vocoder_type!r} (vocoder.type); valid: {', '.join(VOCODERS)}")
        self.vocoder_type = vocoder_type
        self.mel_scale = VOCODERS[vocoder_type]
        self.vocoder = NsfHifiGAN(vocoder_ckpt, device=device)
        self.device = self.vocoder.device
        self.vocoder_sample_rate = self.vocoder.sample_rate
        self.vocoder_hop_size = self.vocoder.hop_size
        self.dimension = self.vocoder.dimension

    def extract(self, audio: Tensor, sample_rate: int, keyshift: float = 0) -> Tensor:
        """Log-mel [B, T, dimension] of audio [B, N] at `sample_rate` (resampled to the vocoder rate).

        keyshift (semitones) shifts the analysis as the preprocessing's augmented mel does.
        """
        audio = audio.to(self.device)
        if int(sample_rate) != self.vocoder_sample_rate:
            audio = resample(audio, int(sample_rate), self.vocoder_sample_rate, lowpass_filter_width=_RESAMPLE_WIDTH)
        return self.vocoder.extract(audio, keyshift=keyshift)

    def infer(self, mel: Tensor, f0: Tensor) -> Tensor:
        """mel [B, T, dimension] (natural log), f0 [B, T', 1] Hz with T' >= T -> audio [B, 1, T * hop]."""
        if self.mel_scale != 1.0:
            mel = mel * self.mel_scale
        return self.vocoder(mel, f0).unsqueeze(1)
