"""Audio file I/O of the preprocessing stages: decode to float32 mono (anything libsndfile reads: WAV of
any sample format, FLAC, OGG, MP3, AIFF), resample, write int16 WAV. Failures raise `AudioReadError`."""
from __future__ import annotations

import math
import os
import wave
from typing import BinaryIO

import numpy as np
import soundfile as sf

__all__ = ["AudioReadError", "read_audio_mono", "resample_audio", "write_wav_int16"]

PathLike = str | os.PathLike


class AudioReadError(ValueError):
    """An audio file is unreadable, corrupt, empty or holds non-finite samples; `path` and the short
    `reason` (without the path) are kept for summaries."""

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def read_audio_mono(path: PathLike) -> tuple[np.ndarray, int]:
    """(samples float32 [L], rate in Hz) of a whole audio file at its native rate, channels averaged.

    Integers scale to [-1, 1) as libsndfile does (int16 / 32768, unsigned 8-bit centred on 128); float
    files keep their values. Raises FileNotFoundError, or AudioReadError (not decodable, no samples, NaN/inf).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file {os.fspath(path)} not found")
    if os.path.getsize(path) == 0:
        raise AudioReadError(path, "empty file (0 bytes)")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        # libsndfile reports truncated or unknown containers as generic errors; keep its text.
        raise AudioReadError(path, f"not a readable audio file ({err})") from None
    if data.shape[0] == 0:
        raise AudioReadError(path, "contains no audio samples")
    # Channel average in float32, like librosa.to_mono which 4.1 uses.
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise AudioReadError(path, "contains NaN or infinite samples")
    return mono, int(rate)


def resample_audio(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 `x` [L] to float32 [ceil(L * sr_out / sr_in)] (`x` itself at equal rates).

    soxr "HQ", as `librosa.resample` >= 0.10 with its `fix_length`; 4.1's resampy "kaiser_best" differs by
    far less than one 16-bit step.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return x
    import soxr

    out = soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ")
    n_out = int(math.ceil(len(x) * sr_out / sr_in))
    if len(out) < n_out:
        out = np.pad(out, (0, n_out - len(out)))
    return np.ascontiguousarray(out[:n_out], dtype=np.float32)


def write_wav_int16(target: PathLike | BinaryIO, pcm: np.ndarray, rate: int) -> None:
    """Write mono int16 `pcm` [L] to a path or binary file as a canonical 44-byte-header WAV (as scipy writes)."""
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"expected a 1-D int16 array, got {pcm.dtype} with shape {pcm.shape}")
    handle = wave.open(target if not isinstance(target, (str, os.PathLike)) else os.fspath(target), "wb")
    with handle as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.astype("<i2", copy=False).tobytes())
