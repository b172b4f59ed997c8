"""The one STFT / mel path of the toolkit: every spectrogram (training targets, preprocessing, the
NSF-HiFiGAN vocoder mel, F0 models) goes through `stft_magnitude` and the cached window and filterbank;
padding, magnitude epsilon, key shift and speed are parameters."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Every cache key holds all parameters that shape the tensor, plus dtype and device (4.1 keyed on fmax
# alone, so the first n_fft / n_mels used for an fmax silently won).
_WINDOW_CACHE: dict[tuple, torch.Tensor] = {}
_MEL_CACHE: dict[tuple, torch.Tensor] = {}

PadMode = Literal["reflect", "constant"]


def hann_window(win_size: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Periodic Hann window [win_size], cached per (win_size, dtype, device)."""
    device = torch.device(device)
    key = (win_size, dtype, device)
    window = _WINDOW_CACHE.get(key)
    if window is None:
        # Built in float32 and then cast, as 4.1 did, so float64 callers see the same window values.
        # Outside inference mode: a cached inference tensor would break later autograd use (training).
        with torch.inference_mode(False):
            window = torch.hann_window(win_size).to(dtype=dtype, device=device)
        _WINDOW_CACHE[key] = window
    return window


def mel_filterbank(sampling_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float | None,
                   dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                   htk: bool = False) -> torch.Tensor:
    """librosa mel filterbank (Slaney norm) as a tensor [num_mels, n_fft // 2 + 1], cached by all args."""
    device = torch.device(device)
    key = (sampling_rate, n_fft, num_mels, float(fmin), None if fmax is None else float(fmax), htk, dtype, device)
    basis = _MEL_CACHE.get(key)
    if basis is None:
        # librosa builds float32; casting afterwards keeps float64 callers on the same values as 4.1.
        import librosa  # heavy import, needed only when a filterbank is first built

        fb = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax, htk=htk)
        with torch.inference_mode(False):  # cached for autograd users too (see hann_window)
            basis = torch.from_numpy(np.ascontiguousarray(fb)).to(dtype=dtype, device=device)
        _MEL_CACHE[key] = basis
    return basis


def _warn_out_of_range(y: torch.Tensor) -> None:
    # 4.1 prints these for audio outside [-1, 1]; harmless, but worth seeing when it happens.
    # Skipped for accelerator tensors, where reading the values back would stall every step.
    if y.device.type != "cpu":
        return
    y_min, y_max = float(torch.min(y.detach())), float(torch.max(y.detach()))
    if y_min < -1.0:
        logger.warning("min value is %s", y_min)
    if y_max > 1.0:
        logger.warning("max value is %s", y_max)


def stft_magnitude(y: torch.Tensor, n_fft: int, hop_size: int, win_size: int, pad_left: int, pad_right: int,
                   pad_mode: PadMode = "reflect", eps: float = 1e-6, center: bool = False) -> torch.Tensor:
    """Magnitude STFT sqrt(re^2 + im^2 + eps), periodic Hann window: y [B, N] -> [B, n_fft // 2 + 1, T].

    y is padded by (pad_left, pad_right) with `pad_mode` first; `center=True` also lets torch.stft
    reflect-pad n_fft // 2 per side. Uncentred, T = (N + pad_left + pad_right - n_fft) // hop_size + 1.
    """
    if pad_left or pad_right:
        y = F.pad(y.unsqueeze(1), (pad_left, pad_right), mode=pad_mode).squeeze(1)
    window = hann_window(win_size, y.dtype, y.device)
    spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=window, center=center,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + eps)


def dynamic_range_compression(x: torch.Tensor, clip_val: float = 1e-5) -> torch.Tensor:
    """Natural log with a floor: ln(max(x, clip_val)), any shape."""
    return torch.log(torch.clamp(x, min=clip_val))


def spectrogram_torch(y: torch.Tensor, n_fft: int, sampling_rate: int, hop_size: int, win_size: int,
                      center: bool = False) -> torch.Tensor:
    """Linear magnitude spectrogram of the synthesizer: y [B, N] in [-1, 1] -> [B, n_fft // 2 + 1, T].

    Reflect-pads (n_fft - hop_size) / 2 per side: T = N // hop_size for the usual n_fft = 4 * hop_size.
    `sampling_rate` is unused, kept for call compatibility.
    """
    _warn_out_of_range(y)
    pad = int((n_fft - hop_size) / 2)
    return stft_magnitude(y, n_fft, hop_size, win_size, pad, pad, "reflect", 1e-6, center)


def spec_to_mel_torch(spec: torch.Tensor, n_fft: int, num_mels: int, sampling_rate: int, fmin: float,
                      fmax: float | None) -> torch.Tensor:
    """Log-mel ln(max(melfb @ spec, 1e-5)) of a linear spectrogram: [B, n_fft // 2 + 1, T] -> [B, num_mels, T]."""
    basis = mel_filterbank(sampling_rate, n_fft, num_mels, fmin, fmax, spec.dtype, spec.device)
    return dynamic_range_compression(torch.matmul(basis, spec))


def mel_spectrogram_torch(y: torch.Tensor, n_fft: int, num_mels: int, sampling_rate: int, hop_size: int,
                          win_size: int, fmin: float, fmax: float | None, center: bool = False) -> torch.Tensor:
    """Log-mel of audio, `spectrogram_torch` followed by `spec_to_mel_torch`: [B, N] -> [B, num_mels, T]."""
    spec = spectrogram_torch(y, n_fft, sampling_rate, hop_size, win_size, center)
    return spec_to_mel_torch(spec, n_fft, num_mels, sampling_rate, fmin, fmax)


@dataclass(eq=False)
class VocoderMel:
    """The NSF-HiFiGAN release's mel ("nvSTFT"): used for `.mel.npy`, shallow diffusion and the enhancer.

    Differs from `mel_spectrogram_torch` in padding ((win - hop) // 2 left, a right pad large enough for
    one frame, zeros when reflecting is impossible), magnitude epsilon 1e-9, and optional key shift / speed.
    """

    sampling_rate: int = 44100
    n_mels: int = 128
    n_fft: int = 2048
    win_size: int = 2048
    hop_length: int = 512
    fmin: float = 40
    fmax: float = 16000
    clip_val: float = 1e-5

    def get_mel(self, y: torch.Tensor, keyshift: float = 0, speed: float = 1,
                center: bool = False) -> torch.Tensor:
        """Log-mel [B, n_mels, T] of audio y [B, N] (or [N]). keyshift (semitones) scales FFT and window by
        2^(k/12) under the unshifted filterbank (a pitch shift); speed scales the hop: round(hop * speed)."""
        if y.dim() == 1:
            y = y.unsqueeze(0)
        factor = 2 ** (keyshift / 12)
        n_fft_new = int(np.round(self.n_fft * factor))
        win_new = int(np.round(self.win_size * factor))
        hop_new = int(np.round(self.hop_length * speed))

        n = y.size(-1)
        pad_left = (win_new - hop_new) // 2
        pad_right = max((win_new - hop_new + 1) // 2, win_new - n - pad_left)
        # Reflection needs a pad shorter than the signal; very short inputs get zeros instead.
        mode: PadMode = "reflect" if pad_right < n else "constant"
        _warn_out_of_range(y)
        spec = stft_magnitude(y, n_fft_new, hop_new, win_new, pad_left, pad_right, mode, 1e-9, center)

        if keyshift != 0:
            size = self.n_fft // 2 + 1
            if spec.size(1) < size:
                spec = F.pad(spec, (0, 0, 0, size - spec.size(1)))
            # Same operation order as the release (multiply, then divide) to stay bit-close.
            spec = spec[:, :size, :] * self.win_size / win_new

        basis = mel_filterbank(self.sampling_rate, self.n_fft, self.n_mels, self.fmin, self.fmax, spec.dtype,
                               spec.device)
        return dynamic_range_compression(torch.matmul(basis, spec), self.clip_val)

    __call__ = get_mel


def volume_extract(audio: torch.Tensor | np.ndarray, hop_size: int = 512) -> torch.Tensor:
    """Frame RMS loudness (4.1's Volume_Extractor) of the first item of audio [B, N] or [N]: [N // hop_size].

    Frame i is the RMS of samples [i*hop - hop//2, i*hop + (hop+1)//2) of the reflect-padded signal.
    """
    if not isinstance(audio, torch.Tensor):
        audio = torch.as_tensor(np.asarray(audio), dtype=torch.float32)
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    n_frames = int(audio.size(-1) // hop_size)
    power = F.pad((audio**2).unsqueeze(1), (hop_size // 2, (hop_size + 1) // 2), mode="reflect").squeeze(1)
    windows = power[0, : n_frames * hop_size].reshape(n_frames, hop_size)
    return torch.sqrt(windows.mean(dim=-1))


@dataclass(eq=False)
class VolumeExtractor:
    """Object form of `volume_extract` (re-exported by utils.py as 4.1's `Volume_Extractor`)."""

    hop_size: int = 512

    def extract(self, audio: torch.Tensor | np.ndarray) -> torch.Tensor:
        """audio [B, N] or [N] -> first item's volume [N // hop_size]."""
        return volume_extract(audio, self.hop_size)
