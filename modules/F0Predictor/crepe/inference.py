"""CREPE pitch tracking as torchcrepe 0.0.24 ``predict`` computes it (viterbi decoder, padded).

Flow: resample to 16 kHz (resampy ``kaiser_best``) -> 1024-sample frames every
``int(hop * 16000 / sr)`` samples over the zero-padded signal -> per-frame standardisation ->
:class:`~modules.F0Predictor.crepe.model.CrepeNet` -> bins outside [fmin, fmax] masked -> viterbi
over the softmax of the (already sigmoid) bin probabilities -> bin frequency, optionally dithered.
Frames are processed in chunks of ``batch_size``; each chunk is decoded on its own (the viterbi path
restarts), as torchcrepe does.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from modules.F0Predictor.crepe.model import (
    CENTS_OF_BIN0,
    CENTS_PER_BIN,
    MODEL_RATE,
    PITCH_BINS,
    WINDOW,
    CrepeNet,
)

# The viterbi transition matrix is a pure function of the bin count; built once on first use.
_TRANSITION: np.ndarray | None = None


def resample_to_model_rate(audio: np.ndarray | torch.Tensor, sampling_rate: int) -> np.ndarray:
    """Resample mono audio [N] to 16 kHz with resampy's ``kaiser_best`` filter (float32 in/out).

    Raises:
        ImportError: resampy is not installed (says how to install it).
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if sampling_rate == MODEL_RATE:
        return audio
    try:
        import resampy
    except ImportError as error:
        raise ImportError(
            "crepe resamples with resampy as torchcrepe does: .venv/bin/pip install resampy==0.4.3"
        ) from error
    return resampy.resample(audio, sampling_rate, MODEL_RATE)


def model_hop(hop_length: int, sampling_rate: int) -> int:
    """Hop in 16 kHz samples for ``hop_length`` at ``sampling_rate``, truncated (512 -> 185)."""
    if sampling_rate == MODEL_RATE:
        return hop_length
    return int(hop_length * MODEL_RATE / sampling_rate)


def frame_audio(audio16: np.ndarray | torch.Tensor, hop16: int) -> torch.Tensor:
    """Cut 16 kHz audio [N16] into standardised network frames [1 + N16 // hop16, 1024].

    The signal is zero-padded by 512 on both sides so that frame i is centred on sample i * hop16.
    Each frame is mean-centred and divided by its unbiased std (at least 1e-10: silent frames stay
    zero, near-silent ones become very loud, which is what the network was trained with).
    """
    x = torch.as_tensor(audio16, dtype=torch.float32).reshape(1, -1)
    x = F.pad(x, (WINDOW // 2, WINDOW // 2))
    frames = x.unfold(1, WINDOW, hop16)[0].clone()
    frames -= frames.mean(dim=1, keepdim=True)
    frames /= torch.max(torch.tensor(1e-10), frames.std(dim=1, keepdim=True))
    return frames


def salience(net: CrepeNet, frames: torch.Tensor, batch_size: int = 1024) -> list[torch.Tensor]:
    """Run the network over frames [T, 1024] in chunks of ``batch_size``.

    Returns:
        one probability tensor [1, 360, t] (float32, CPU) per chunk; sum of t = T.
    """
    device = next(net.parameters()).device
    chunks = []
    with torch.no_grad():
        for start in range(0, frames.shape[0], batch_size):
            probs = net(frames[start : start + batch_size].to(device)).cpu()
            chunks.append(probs.reshape(1, -1, PITCH_BINS).transpose(1, 2))
    return chunks


def frequency_to_bin(frequency: float, round_up: bool = False) -> int:
    """CREPE bin of a frequency in Hz, floored (or ceiled), computed in float32 like torchcrepe."""
    cents = 1200 * torch.log2(torch.tensor(frequency, dtype=torch.float32) / 10.0)
    bins = (cents - CENTS_OF_BIN0) / CENTS_PER_BIN
    return int(torch.ceil(bins) if round_up else torch.floor(bins))


def viterbi_transition() -> np.ndarray:
    """Transition matrix [360, 360] float64: triangular, |i - j| < 12 bins, rows sum to 1."""
    global _TRANSITION
    if _TRANSITION is None:
        distance = np.abs(np.arange(PITCH_BINS)[None, :] - np.arange(PITCH_BINS)[:, None])
        weights = np.maximum(12 - distance, 0)
        _TRANSITION = weights / weights.sum(axis=1, keepdims=True)
    return _TRANSITION


def decode_viterbi(
    probs: torch.Tensor, fmin: float, fmax: float, dither: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one chunk of bin probabilities into pitch and periodicity.

    Args:
        probs: network output [1, 360, t] (not modified).
        fmin, fmax: allowed range in Hz; bins below ``floor(bin(fmin))`` and from
            ``ceil(bin(fmax))`` on are excluded.
        dither: add torchcrepe's triangular noise of +-20 cents to every frame (one
            ``scipy.stats.triang`` draw of size [1, t] from NumPy's global RNG), as 4.1 always did.

    Returns:
        (pitch [1, t] Hz float32, periodicity [1, t] float32 = probability of the chosen bin).
    """
    import librosa

    probs = probs.clone()
    probs[:, : frequency_to_bin(fmin)] = -float("inf")
    probs[:, frequency_to_bin(fmax, round_up=True) :] = -float("inf")
    # The viterbi emission is the softmax over bins of the sigmoid outputs (torchcrepe's choice).
    emission = torch.softmax(probs, dim=1).numpy()
    bins = np.stack(
        [librosa.sequence.viterbi(seq, viterbi_transition()).astype(np.int64) for seq in emission]
    )
    bins = torch.from_numpy(bins)
    periodicity = probs.gather(1, bins[:, None, :])[:, 0, :]
    # int64 bins * int + Python float: float32 tensor arithmetic, bit-compatible with torchcrepe.
    cents = CENTS_PER_BIN * bins + CENTS_OF_BIN0
    if dither:
        import scipy.stats

        noise = scipy.stats.triang.rvs(
            c=0.5, loc=-CENTS_PER_BIN, scale=2 * CENTS_PER_BIN, size=tuple(cents.shape)
        )
        cents = cents + cents.new_tensor(noise)
    pitch = 10 * 2 ** (cents / 1200)
    return pitch, periodicity


def predict_pitch(
    net: CrepeNet,
    audio: np.ndarray | torch.Tensor,
    sampling_rate: int,
    hop_length: int,
    fmin: float = 50.0,
    fmax: float = 1100.0,
    dither: bool = True,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchcrepe ``predict(..., pad=True, decoder=viterbi, return_periodicity=True)``.

    Args:
        net: a loaded :class:`CrepeNet` (any device).
        audio: mono audio [N] at ``sampling_rate``.
        hop_length: hop in samples at ``sampling_rate``.

    Returns:
        (pitch [1, M] Hz, periodicity [1, M]), float32 CPU, M = 1 + N16 // hop16.
    """
    hop16 = model_hop(hop_length, sampling_rate)
    frames = frame_audio(resample_to_model_rate(audio, sampling_rate), hop16)
    decoded = [decode_viterbi(p, fmin, fmax, dither) for p in salience(net, frames, batch_size)]
    pitch = torch.cat([d[0] for d in decoded], dim=1)
    periodicity = torch.cat([d[1] for d in decoded], dim=1)
    return pitch, periodicity
