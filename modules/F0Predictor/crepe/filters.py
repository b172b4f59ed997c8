"""The smoothing and voicing steps 4.1 applies to torchcrepe's output.

NaN marks a missing value in both pools. The loudness gate reproduces torchcrepe's
``threshold.Silence`` (A-weighted STFT loudness at 16 kHz).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from modules.F0Predictor.crepe.inference import model_hop, resample_to_model_rate
from modules.F0Predictor.crepe.model import MODEL_RATE, WINDOW

# torchcrepe's loudness floor and reference level, in dB.
_MIN_DB = -100.0
_REF_DB = 20.0


def masked_median(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Running median over ``kernel_size`` frames (stride 1, centred) that skips NaN values.

    Positions beyond the edges count as missing. With an even number of valid values the lower
    of the two middle ones is taken; a window without valid values gives NaN.

    Args:
        x: [B, T] float tensor.

    Returns:
        [B, T], same dtype.
    """
    half = kernel_size // 2
    # Missing values sort last as +inf, so the first `count` sorted entries are the valid ones.
    padded = F.pad(torch.where(torch.isnan(x), torch.inf, x), (half, half), value=torch.inf)
    windows, _ = torch.sort(padded.unfold(-1, kernel_size, 1), dim=-1)
    valid = F.pad((~torch.isnan(x)).to(torch.int64), (half, half)).unfold(-1, kernel_size, 1)
    middle = ((valid.sum(dim=-1) - 1) // 2).clamp(min=0)
    median = windows.gather(-1, middle[..., None])[..., 0]
    return torch.where(torch.isinf(median), torch.nan, median)


def masked_mean(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Running mean over ``kernel_size`` frames (stride 1, centred, zero padding) that skips NaN.

    The mean divides by the number of valid values in the window (at least 1). A result of
    exactly 0 (no valid value, or values summing to 0) becomes NaN, as in 4.1.

    Args:
        x: [B, T] float tensor.

    Returns:
        [B, T], same dtype.
    """
    valid = ~torch.isnan(x)
    ones = torch.ones(1, 1, kernel_size, dtype=x.dtype)
    half = kernel_size // 2
    # Sums as a convolution with a ones kernel: the float32 rounding of 4.1's pooling.
    total = F.conv1d(torch.where(valid, x, 0.0)[:, None], ones, padding=half)[:, 0]
    count = F.conv1d(valid.to(x.dtype)[:, None], ones, padding=half)[:, 0].clamp(min=1)
    mean = total / count
    return torch.where(mean == 0, torch.nan, mean)


def a_weighted_loudness(
    audio: np.ndarray | torch.Tensor, sampling_rate: int, hop_length: int
) -> torch.Tensor:
    """Per-frame A-weighted loudness in dB as torchcrepe computes it for its silence gate.

    16 kHz audio (resampy) -> centred STFT (n_fft 1024, hop ``int(hop * 16000 / sr)``, zero
    padding) -> magnitude in dB (librosa ``amplitude_to_db``: floor 1e-5, at most 80 dB below the
    loudest bin) + A-weighting - 20 dB, floored at -100 dB -> mean over frequency.

    Args:
        audio: mono audio [N] at ``sampling_rate``.
        hop_length: hop in samples at ``sampling_rate``.

    Returns:
        [1, 1 + N16 // hop16] float32.
    """
    import librosa

    audio16 = resample_to_model_rate(audio, sampling_rate)
    stft = librosa.stft(
        audio16,
        n_fft=WINDOW,
        hop_length=model_hop(hop_length, sampling_rate),
        win_length=WINDOW,
        center=True,
        pad_mode="constant",
    )
    db = librosa.amplitude_to_db(np.abs(stft))
    frequencies = librosa.fft_frequencies(sr=MODEL_RATE, n_fft=WINDOW)
    # A_weighting warns about log10(0) at DC; that bin ends up on the -100 dB floor anyway.
    with np.errstate(divide="ignore"):
        weights = librosa.A_weighting(frequencies)[:, None] - _REF_DB
    weighted = db + weights
    weighted[weighted < _MIN_DB] = _MIN_DB
    return torch.from_numpy(weighted.mean(axis=0)).float()[None]


def voiced_f0(
    pitch: torch.Tensor,
    periodicity: torch.Tensor,
    audio: np.ndarray | torch.Tensor,
    sampling_rate: int,
    hop_length: int,
    threshold: float,
    silence_db: float = -60.0,
) -> torch.Tensor:
    """4.1's crepe voicing and smoothing of a raw torchcrepe track.

    Steps: median filter (3) of the periodicity; periodicity 0 where the A-weighted loudness is
    below ``silence_db``; pitch NaN where periodicity < ``threshold``; NaN-aware mean filter (3) of
    the pitch; NaN -> 0.

    Args:
        pitch: [1, M] Hz. periodicity: [1, M].
        audio: the mono audio [N] the track was computed from (for the loudness gate).

    Returns:
        f0 [M] float32, 0 = unvoiced.
    """
    periodicity = masked_median(periodicity.cpu(), 3)
    loudness = a_weighted_loudness(audio, sampling_rate, hop_length)
    periodicity = torch.where(loudness < silence_db, 0.0, periodicity)
    f0 = torch.where(periodicity < threshold, torch.nan, pitch.cpu())
    f0 = masked_mean(f0, 3)
    return torch.nan_to_num(f0, nan=0.0)[0]
