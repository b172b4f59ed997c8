"""NSF-HiFiGAN enhancer (`-eh`): re-synthesise So-VITS output with the stand-alone vocoder. The adaptive key
shifts the vocoder's range up by resampling to a higher nominal rate before the mel and back after."""
from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.device import resolve_device
from modules.audio_resample import resample
from vdecoder.nsf_hifigan.models import NsfHifiGAN

__all__ = ["Enhancer"]

PathLike = str | os.PathLike
# F0 above which adaptive_key="auto" starts shifting (4.1's command line only passes integers)
AUTO_KEY_REFERENCE_HZ = 760.0


class Enhancer:
    """4.1's enhancer: type 'nsf-hifigan' (the only one) from the release `model` file; device None = auto."""

    def __init__(self, enhancer_type: Literal["nsf-hifigan"], enhancer_ckpt: PathLike,
                 device: str | torch.device | None = None) -> None:
        if enhancer_type != "nsf-hifigan":
            raise ValueError(f"unknown enhancer type {enhancer_type!r}; the only one is 'nsf-hifigan'")
        self.device = resolve_device(device)
        self.enhancer = NsfHifiGAN(enhancer_ckpt, device=self.device)
        self.enhancer_sample_rate = self.enhancer.sample_rate
        self.enhancer_hop_size = self.enhancer.hop_size

    @torch.no_grad()
    def enhance(self, audio: Tensor, sample_rate: int, f0: Tensor, hop_size: int,
                adaptive_key: float | Literal["auto"] = 0, silence_front: float = 0) -> tuple[Tensor, int]:
        """Re-synthesise audio [1, N] at `sample_rate` given its F0 [1, frames, 1] (Hz, `hop_size`), the range
        shifted up by `adaptive_key` semitones (or "auto"), the first `silence_front` seconds skipped (zeros).
        Returns (audio [N'], rate) at the vocoder's rate; N' covers whole vocoder frames plus the skipped front."""
        start_frame = int(silence_front * sample_rate / hop_size)
        real_silence_front = start_frame * hop_size / sample_rate
        audio = audio[:, int(np.round(real_silence_front * sample_rate)):].to(self.device)
        # A private float32 copy: 4.1 scaled the caller's tensor in place through a NumPy view.
        f0_np = f0[:, start_frame:, :].detach().cpu().numpy()[0, :, 0].astype(np.float32, copy=True)

        if isinstance(adaptive_key, str):
            if adaptive_key != "auto":
                raise ValueError(f"adaptive_key must be a number or 'auto', got {adaptive_key!r}")
            # whole semitones that bring the highest F0 down to the reference, never negative
            peak = float(f0_np.max()) if f0_np.size else 0.0
            semitones = np.ceil(12 * np.log2(peak / AUTO_KEY_REFERENCE_HZ)) if peak > 0 else 0.0
            adaptive_key = max(0.0, float(semitones))
        adaptive_factor = 2 ** (-adaptive_key / 12)
        adaptive_sample_rate = 100 * int(np.round(self.enhancer_sample_rate / adaptive_factor / 100))
        real_factor = self.enhancer_sample_rate / adaptive_sample_rate

        # 4.1 resamples with a 128-zero-crossing windowed sinc; equal rates pass the audio through.
        audio_res = resample(audio, sample_rate, adaptive_sample_rate, lowpass_filter_width=128)
        n_frames = int(audio_res.size(-1) // self.enhancer_hop_size + 1)

        # Scale F0 in float32 (as 4.1's in-place NumPy product), then re-time it to vocoder frames.
        f0_np = f0_np * np.float32(real_factor)
        time_org = (hop_size / sample_rate) * np.arange(len(f0_np)) / real_factor
        time_frame = (self.enhancer_hop_size / self.enhancer_sample_rate) * np.arange(n_frames)
        f0_res = np.interp(time_frame, time_org, f0_np, left=f0_np[0], right=f0_np[-1])
        f0_res = torch.from_numpy(f0_res).unsqueeze(0).float().to(self.device)  # [1, n_frames]

        mel = self.enhancer.extract(audio_res)  # [1, T, n_mels], T = n_frames - 1
        enhanced = self.enhancer(mel, f0_res).view(-1)
        enhanced = resample(enhanced, adaptive_sample_rate, self.enhancer_sample_rate, lowpass_filter_width=128)
        if start_frame > 0:
            enhanced = F.pad(enhanced, (int(np.round(self.enhancer_sample_rate * real_silence_front)), 0))
        return enhanced, self.enhancer_sample_rate
