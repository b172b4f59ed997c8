"""Base classes of the F0 predictors and the frame post-processing they share."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.device import resolve_device

# An explicit p_len this many frames (or more) away from the audio's own frame count is refused (4.1's rule).
MAX_P_LEN_OFFSET = 4


def as_audio(wav: np.ndarray | torch.Tensor, dtype: type = np.float64) -> np.ndarray:
    """Mono audio [N] as a numpy array of ``dtype`` (float64: what Praat and WORLD compute on)."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    return np.asarray(wav, dtype=dtype)


def fill_unvoiced(f0: np.ndarray, hop_length: int, sampling_rate: int,
                  classic: bool) -> tuple[np.ndarray, np.ndarray]:
    """(f0 [T], vuv [T] float32): linear interpolation over time between voiced frames (``f0 > 0``),
    edges held; float32 zeros when nothing is voiced.

    Frame i sits at ``i * hop_length / sampling_rate`` s; every frame is re-sampled by ``np.interp``
    (float64). As in 4.1, ``classic`` (pm, dio, harvest) computes the voiced times in float32 and, with
    exactly one voiced frame, returns the constant ``f0[0]`` (usually 0, a 4.1 bug kept for identical
    features); the neural flavour uses float64 times and returns the voiced value as float32.
    """
    n = f0.shape[0]
    vuv = (f0 > 0.0).astype(np.float32)
    voiced = np.flatnonzero(f0)
    values = f0[voiced]
    if values.shape[0] == 0:
        return np.zeros(n, dtype=np.float32), vuv
    if values.shape[0] == 1:
        if classic:
            return np.ones(n, dtype=np.float32) * f0[0], vuv  # float64 result, as 4.1's
        return np.full(n, values[0], dtype=np.float32), vuv
    step = hop_length / sampling_rate
    # float32 indices times a Python float stay float32 (NumPy 2 scalar rules), as in 4.1.
    t_voiced = voiced.astype(np.float32) * np.float32(step) if classic else step * voiced
    # (i * hop) / sr, not i * (hop / sr): the two differ in the last bit.
    t_frames = np.arange(n) * hop_length / sampling_rate
    return np.interp(t_frames, t_voiced, values, left=values[0], right=values[-1]), vuv


def resize_f0(f0: np.ndarray, target_len: int) -> np.ndarray:
    """Linearly resample f0 [n] to float64 [target_len] the dio/harvest way: values below 0.001 Hz become
    NaN before interpolating at ``i * n / target_len``, so voiced runs shrink at both edges."""
    source = np.array(f0)
    source[source < 0.001] = np.nan
    n = len(source)
    positions = np.arange(0, n * target_len, n) / target_len
    return np.nan_to_num(np.interp(positions, np.arange(0, n), source))


def post_process(f0: np.ndarray | torch.Tensor, pad_to: int, hop_length: int = 512,
                 sampling_rate: int = 44100) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-resize a network's F0 [M] (Hz, 0 = unvoiced) to ``pad_to`` frames, then fill the gaps:
    numpy (f0 [pad_to], vuv [pad_to] float32), see :func:`fill_unvoiced` (neural flavour)."""
    track = torch.as_tensor(f0).detach().to("cpu", torch.float32)
    # torch "nearest" (source index floor(i * M / pad_to)), as 4.1's repeat_expand.
    resized = F.interpolate(track[None, None], size=pad_to, mode="nearest")[0, 0].numpy()
    return fill_unvoiced(resized, hop_length, sampling_rate, classic=False)


def finish_f0(f0: np.ndarray | torch.Tensor, p_len: int, hop_length: int = 512,
              sampling_rate: int = 44100) -> tuple[np.ndarray, np.ndarray]:
    """End of every neural ``compute_f0_uv``: two float64 zero arrays [p_len] when the network's F0 [M]
    is all 0, else :func:`post_process`."""
    if not bool(torch.as_tensor(f0).ne(0).any()):
        return np.zeros(p_len), np.zeros(p_len)
    return post_process(f0, p_len, hop_length, sampling_rate)


class F0Predictor:
    """Frame-level F0 estimator. Frames are ``hop_length`` samples at ``sampling_rate``; a clip of N
    samples gives ``p_len = N // hop_length`` frames unless ``p_len`` is given."""

    name = "base"

    def __init__(self, hop_length: int = 512, f0_min: float = 50, f0_max: float = 1100,
                 sampling_rate: int = 44100) -> None:
        self.hop_length = hop_length
        self.f0_min = f0_min
        self.f0_max = f0_max
        self.sampling_rate = sampling_rate

    def compute_f0_uv(self, wav: np.ndarray | torch.Tensor,
                      p_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(f0 [p_len] Hz, gaps interpolated; uv [p_len], 1 = voiced) of mono audio [N]. ValueError when
        ``p_len`` is ``MAX_P_LEN_OFFSET`` or more frames from ``N // hop_length`` (all but dio and harvest)."""
        raise NotImplementedError

    def compute_f0(self, wav: np.ndarray | torch.Tensor, p_len: int | None = None) -> np.ndarray:
        """The f0 of :meth:`compute_f0_uv` (kept from 4.1: rmvpe and fcpe return the tuple (zeros, zeros)
        when no frame is voiced)."""
        return self.compute_f0_uv(wav, p_len)[0]

    def _checked_frames(self, n_samples: int, p_len: int | None) -> int:
        """``p_len``, or ``n_samples // hop_length`` when None; refuses a p_len too far from that."""
        own = n_samples // self.hop_length
        if p_len is None:
            return own
        if abs(p_len - own) >= MAX_P_LEN_OFFSET:
            raise ValueError(
                f"{self.name}: pad length error: p_len {p_len} is {abs(p_len - own)} frames away from the "
                f"{own} frames of {n_samples} samples (at most {MAX_P_LEN_OFFSET - 1} allowed)")
        return p_len

    def interpolate_f0(self, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """pm/dio/harvest gap filling of f0 [T] (0 = unvoiced): ``fill_unvoiced(..., classic=True)``."""
        return fill_unvoiced(f0, self.hop_length, self.sampling_rate, classic=True)


class NeuralF0Predictor(F0Predictor):
    """A predictor with a torch network on ``device`` (None/"auto": CUDA when available, else CPU) and a
    voicing ``threshold``. Subclasses load their weights in :meth:`_load_model`, called at construction."""

    def __init__(self, hop_length: int = 512, f0_min: float = 50, f0_max: float = 1100,
                 sampling_rate: int = 44100, device: str | torch.device | None = None,
                 threshold: float = 0.05) -> None:
        super().__init__(hop_length, f0_min, f0_max, sampling_rate)
        self.device = resolve_device(device)
        self.threshold = threshold
        self._load_model()

    def _load_model(self) -> None:
        raise NotImplementedError


class WorldF0Predictor(F0Predictor):
    """dio and harvest (``name``: the pyworld estimator): WORLD estimate, StoneMask, resize to p_len, gap
    filling; p_len is not checked. f0 is float64, or float32 zeros when nothing is voiced."""

    round_to_tenth = False  # dio rounds each refined value to 0.1 Hz, harvest does not
    resize_f0 = staticmethod(resize_f0)

    def compute_f0_uv(self, wav: np.ndarray | torch.Tensor,
                      p_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        import pyworld

        x = as_audio(wav)
        p_len = len(x) // self.hop_length if p_len is None else p_len
        estimate = getattr(pyworld, self.name)
        f0, times = estimate(x, fs=self.sampling_rate, f0_floor=self.f0_min, f0_ceil=self.f0_max,
                             frame_period=1000 * self.hop_length / self.sampling_rate)
        f0 = pyworld.stonemask(x, f0, times, self.sampling_rate)
        if self.round_to_tenth:
            f0 = np.round(f0, 1)  # the same scaled rint as 4.1's per-value round(v, 1)
        return self.interpolate_f0(resize_f0(f0, p_len))
