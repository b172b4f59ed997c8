"""The figures of evaluate.py, each a plain function of arrays (units in the names).

* Pitch: cents = 1200 * log2(f / f_ref), compared on frames voiced in both tracks.
* Loudness: Pearson correlation of the two loudness envelopes (frame RMS in dB).
* Content: mean frame-wise cosine similarity of two unit sequences.
* MCD (mel-cepstral distortion, dB): WORLD (pyworld) spectral envelopes of each signal (DIO + StoneMask F0,
  CheapTrick, 10 ms frames); each envelope's log amplitude is resampled onto a mel-like frequency axis (the
  first-order all-pass warp with MCEP_ALPHA, 0.544 at 44.1 kHz, SPTK's value) and turned into a real
  cepstrum c_0..c_24 (SPTK's convention: log|H| = c_0 + sum c_d cos(d w)). Per frame
  MCD = 10 * sqrt(2) / ln 10 * sqrt(sum_{d=1..24} (c_d - c'_d)^2), c_0 (loudness) excluded, averaged over the
  frames where the reference is within 40 dB of its loudest frame. Frames are paired by time: resynthesis
  keeps the timing, so no alignment search is made.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["MCD_ORDER", "SILENCE_DB", "audio_cepstra", "content_similarity", "loudness_correlation",
           "loudness_envelope", "mcd_db", "mel_cepstra", "pitch_errors", "warp_frequency"]

MCD_ORDER = 24
MCD_FRAME_MS = 10.0
SILENCE_DB = 40.0  # frames this far below the loudest one count as silence
MCD_CONSTANT = 10.0 * math.sqrt(2.0) / math.log(10.0)
_ALPHAS = {8000: 0.312, 11025: 0.357, 16000: 0.41, 22050: 0.455, 24000: 0.466, 32000: 0.504, 44100: 0.544,
           48000: 0.554}


def pitch_errors(f0_ref: np.ndarray, voiced_ref: np.ndarray, f0_out: np.ndarray, voiced_out: np.ndarray,
                 semitones: float = 0.0) -> dict[str, float | int | None]:
    """Pitch of `f0_out` against `f0_ref` moved by `semitones` (Hz tracks and voicing flags of equal length):
    rmse_cents and over_50_cents (share 0-1) on frames voiced in both (None when there are none),
    voicing_error (share of all frames where the two voicing decisions differ), frames (compared)."""
    voiced_ref, voiced_out = np.asarray(voiced_ref) > 0, np.asarray(voiced_out) > 0
    both = voiced_ref & voiced_out & (f0_ref > 0) & (f0_out > 0)
    cents = 1200.0 * np.log2(f0_out[both] / (f0_ref[both] * 2.0 ** (semitones / 12.0)))
    some = cents.size > 0
    return {"rmse_cents": float(np.sqrt(np.mean(cents ** 2))) if some else None,
            "over_50_cents": float(np.mean(np.abs(cents) > 50.0)) if some else None,
            "voicing_error": float(np.mean(voiced_ref != voiced_out)), "frames": int(cents.size)}


def loudness_envelope(audio: np.ndarray, hop: int) -> np.ndarray:
    """Frame RMS in dB (floor -100 dB) of non-overlapping `hop`-sample frames of `audio` [N]."""
    n = len(audio) // hop
    frames = np.asarray(audio[:n * hop], dtype=np.float64).reshape(n, hop)
    return 20.0 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-5)


def loudness_correlation(a: np.ndarray, b: np.ndarray, hop: int) -> float | None:
    """Pearson correlation (-1..1) of the loudness envelopes of two equally long signals; None when either
    envelope is flat."""
    ea, eb = loudness_envelope(a, hop), loudness_envelope(b, hop)
    n = min(len(ea), len(eb))
    ea, eb = ea[:n] - ea[:n].mean(), eb[:n] - eb[:n].mean()
    denominator = math.sqrt(float(np.sum(ea ** 2) * np.sum(eb ** 2)))
    return float(np.sum(ea * eb) / denominator) if denominator > 0 else None


def content_similarity(units_a: np.ndarray, units_b: np.ndarray) -> float:
    """Mean cosine similarity of frames [C, T] paired by index (the shorter length)."""
    n = min(units_a.shape[-1], units_b.shape[-1])
    a, b = units_a[:, :n], units_b[:, :n]
    cos = np.sum(a * b, axis=0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) + 1e-12)
    return float(np.mean(cos))


def warp_frequency(omega: np.ndarray, alpha: float) -> np.ndarray:
    """Phase response of the first-order all-pass (z^-1 - alpha) / (1 - alpha z^-1): the mel-like warp of
    radian frequencies 0..pi; `-alpha` undoes `alpha`."""
    return omega + 2.0 * np.arctan(alpha * np.sin(omega) / (1.0 - alpha * np.cos(omega)))


def mel_cepstra(envelope: np.ndarray, rate: int, order: int = MCD_ORDER) -> np.ndarray:
    """Mel-cepstra [T, order + 1] of power envelopes [T, F] (bins 0..rate/2): log amplitude sampled on a uniform
    grid of warped frequency, real cepstrum, c_1.. doubled (log|H| = c_0 + sum c_d cos(d w))."""
    bins = envelope.shape[1]
    alpha = _ALPHAS.get(rate)
    if alpha is None:
        raise ValueError(f"no mel-cepstrum warp known for {rate} Hz; known rates: {', '.join(map(str, _ALPHAS))}")
    grid = np.linspace(0.0, math.pi, bins)
    source = warp_frequency(grid, -alpha)  # the linear frequency each warped grid point stands for
    log_amp = 0.5 * np.log(np.maximum(envelope, 1e-20))
    warped = np.stack([np.interp(source, grid, row) for row in log_amp])
    cepstra = np.fft.irfft(warped, axis=1)[:, :order + 1]
    cepstra[:, 1:] *= 2.0
    return cepstra


def audio_cepstra(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mel-cepstra [T, MCD_ORDER + 1] of `audio` from its WORLD spectral envelope (DIO + StoneMask F0,
    CheapTrick, MCD_FRAME_MS frames)."""
    import pyworld

    x = np.asarray(audio, dtype=np.float64)
    f0, times = pyworld.dio(x, rate, frame_period=MCD_FRAME_MS)
    f0 = pyworld.stonemask(x, f0, times, rate)
    return mel_cepstra(pyworld.cheaptrick(x, f0, times, rate), rate)


def mcd_db(reference: np.ndarray, output: np.ndarray) -> float:
    """Mel-cepstral distortion (dB, 0 = identical envelopes) of `output` against `reference` mel-cepstra
    [T, D + 1], frames paired by index (see the module docstring)."""
    n = min(len(reference), len(output))
    ref, out = reference[:n], output[:n]
    loud = ref[:, 0] > ref[:, 0].max() - SILENCE_DB / (20.0 / math.log(10.0))
    distance = MCD_CONSTANT * np.sqrt(np.sum((ref[loud, 1:] - out[loud, 1:]) ** 2, axis=1))
    return float(np.mean(distance))
