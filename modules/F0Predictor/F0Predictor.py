"""Base class of the F0 predictors and the post-processing shared by pm, dio and harvest."""
from __future__ import annotations

import numpy as np
import torch


class F0Predictor:
    """Frame-level F0 estimator with the 4.1 interface.

    Frames are ``hop_length`` samples at ``sampling_rate`` (512 at 44.1 kHz); a clip of L samples
    gives ``p_len = L // hop_length`` frames unless ``p_len`` is given.
    """

    name = "base"

    def __init__(
        self,
        hop_length: int = 512,
        f0_min: float = 50,
        f0_max: float = 1100,
        sampling_rate: int = 44100,
    ) -> None:
        self.hop_length = hop_length
        self.f0_min = f0_min
        self.f0_max = f0_max
        self.sampling_rate = sampling_rate

    def compute_f0_uv(
        self, wav: np.ndarray | torch.Tensor, p_len: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (f0 [p_len] in Hz, gaps interpolated; uv [p_len] float32, 1 = voiced).

        Args:
            wav: mono audio [N] at ``sampling_rate``.
            p_len: number of output frames, default ``N // hop_length``.
        """
        raise NotImplementedError

    def compute_f0(self, wav: np.ndarray | torch.Tensor, p_len: int | None = None) -> np.ndarray:
        """Return only the interpolated F0 [p_len] of :meth:`compute_f0_uv`.

        4.1's Harvest version of this method was broken (wrong ``fs`` and a missing attribute) and
        RMVPE/FCPE returned a tuple for silent input; here every predictor returns an array.
        """
        return self.compute_f0_uv(wav, p_len)[0]

    def _frames(self, wav: np.ndarray | torch.Tensor, p_len: int | None) -> int:
        return len(wav) // self.hop_length if p_len is None else p_len

    def interpolate_f0(self, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gap interpolation of pm/dio/harvest (pipeline.md §3.2), quirks included.

        Args:
            f0: frame F0 [T] in Hz, 0 = unvoiced.

        Returns:
            (f0 [T], vuv [T] float32). See :func:`fill_unvoiced` with ``classic=True``.
        """
        return fill_unvoiced(f0, self.hop_length, self.sampling_rate, classic=True)


def fill_unvoiced(
    f0: np.ndarray, hop_length: int, sampling_rate: int, classic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Replace unvoiced frames by linear interpolation over time between voiced frames.

    Frame i sits at ``i * hop_length / sampling_rate`` s; values before the first / after the last
    voiced frame hold that frame's value. Every frame, voiced ones included, is re-sampled by
    ``np.interp``, which returns float64.

    Args:
        f0: frame F0 [T] in Hz; non-zero values are the interpolation points, vuv is ``f0 > 0``.
        hop_length: frame hop in samples.
        sampling_rate: audio rate in Hz.
        classic: True for the pm/dio/harvest flavour, False for the crepe/rmvpe/fcpe one. They differ
            as in 4.1 (quirks.md A.6): classic computes the voiced-frame times in float32, and with
            exactly one voiced frame returns the constant ``f0[0]`` (usually 0, a 4.1 bug) in the
            promoted dtype of float32 and f0; the other flavour uses float64 times and returns the
            voiced value as float32.

    Returns:
        (f0 [T], vuv [T] float32). With no voiced frame f0 is float32 zeros.
    """
    n = f0.shape[0]
    vuv = (f0 > 0.0).astype(np.float32)
    voiced = np.flatnonzero(f0)
    values = f0[voiced]
    if values.shape[0] == 0:
        return np.zeros(n, dtype=np.float32), vuv
    if values.shape[0] == 1:
        if classic:
            return np.ones(n, dtype=np.float32) * f0[0], vuv
        return np.full(n, values[0], dtype=np.float32), vuv
    step = hop_length / sampling_rate
    if classic:
        # float32 indices times a Python float stay float32 (NumPy 2 scalar rules), as in 4.1.
        t_voiced = voiced.astype(np.float32) * np.float32(step)
    else:
        t_voiced = step * voiced
    # (i * hop) / sr, not i * (hop / sr): the two differ in the last bit.
    t_frames = np.arange(n) * hop_length / sampling_rate
    return np.interp(t_frames, t_voiced, values, left=values[0], right=values[-1]), vuv


def resize_f0(f0: np.ndarray, target_len: int) -> np.ndarray:
    """Linearly resample a frame F0 track to ``target_len`` frames the Dio/Harvest way (quirks.md A.5).

    Values below 0.001 Hz become NaN before interpolating at positions ``i * len / target_len``, so any
    output frame whose interpolation touches an unvoiced source frame becomes 0: voiced runs shrink
    at both edges.

    Args:
        f0: frame F0 [n] in Hz.
        target_len: number of output frames.

    Returns:
        float64 [target_len].
    """
    source = np.array(f0)
    source[source < 0.001] = np.nan
    n = len(source)
    positions = np.arange(0, n * target_len, n) / target_len
    return np.nan_to_num(np.interp(positions, np.arange(0, n), source))


def as_float64_audio(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mono audio [N] as a float64 numpy array (what Praat and WORLD compute on)."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    return np.asarray(wav, dtype=np.float64)


class WorldF0Predictor(F0Predictor):
    """Shared flow of the WORLD predictors (dio, harvest): estimate, StoneMask, resize, interpolate."""

    # Dio rounds each refined value to 0.1 Hz, Harvest does not (quirks.md A.5).
    round_to_tenth = False

    def _estimate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return WORLD's coarse (f0, frame times) for float64 audio [N]."""
        raise NotImplementedError

    def compute_f0_uv(
        self, wav: np.ndarray | torch.Tensor, p_len: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (f0 [p_len] Hz, uv [p_len] float32) for mono audio [N]; f0 is float64, or float32
        zeros when nothing is voiced."""
        import pyworld

        x = as_float64_audio(wav)
        p_len = self._frames(x, p_len)
        f0, times = self._estimate(x)
        f0 = pyworld.stonemask(x, f0, times, self.sampling_rate)
        if self.round_to_tenth:
            # Same as 4.1's per-value round(v, 1) on numpy float64 (scaled rint, not decimal rounding).
            f0 = np.round(f0, 1)
        return self.interpolate_f0(self.resize_f0(f0, p_len))

    @staticmethod
    def resize_f0(f0: np.ndarray, target_len: int) -> np.ndarray:
        """See :func:`resize_f0`."""
        return resize_f0(f0, target_len)

    def _frame_period_ms(self) -> float:
        return 1000 * self.hop_length / self.sampling_rate
