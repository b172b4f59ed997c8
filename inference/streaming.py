"""Live conversion: a stream of short chunks for one model, converted one at a time through `Svc`.

    stream = StreamConverter(svc)                      # crossfaded, FCPE, no clustering
    out = stream.process_at(chunk, 48000, "nyaru", 0)  # chunk [n] at 48 kHz -> converted [n] at 48 kHz

Crossfaded mode (4.1's RealTimeVC idea): each chunk is converted together with `context` seconds of the
input before it, and the output runs `crossfade` seconds (whole hops) behind the input. The last crossfade
samples of each conversion are held back and blended (linear fade) with the next conversion of the same
input samples, which sees them with context on both sides, so consecutive outputs join without a click.
Raw mode converts every chunk on its own (lowest compute, seams may click). Either way every chunk's output
has exactly as many samples as its input. One stream holds one signal's state: serve it one chunk at a time.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from inference.infer_tool import Svc
from inference.options import InferOptions, SvcError, pad_array
from inference.slice_loop import out_length
from modules.audio_resample import resample

__all__ = ["StreamConverter"]
MIN_WINDOW_SECONDS = 0.1  # shortest conversion: Praat (pm) needs three periods of 50 Hz and a little more


class StreamConverter:
    """Chunk-by-chunk conversion with `svc`. f0_predictor / cluster_infer_ratio / noice_scale: as for songs
    (FCPE by default, the fastest offline predictor); crossfade and context in seconds, rounded up to
    whole hops (context at least the crossfade and 0.1 s); raw: 4.1's whole-chunk mode. SvcError for a
    ratio without a cluster file, ValueError for an unknown F0 predictor."""

    def __init__(self, svc: Svc, f0_predictor: str = "fcpe", cluster_infer_ratio: float = 0.0,
                 noice_scale: float = 0.4, crossfade: float = 0.05, context: float = 0.1, raw: bool = False) -> None:
        svc.check_cluster(cluster_infer_ratio)
        self.svc, self.raw = svc, raw
        self.options = dict(f0_predictor=f0_predictor, cluster_infer_ratio=cluster_infer_ratio,
                            noice_scale=noice_scale)
        hop, sr = svc.hop_size, svc.target_sample
        self.fade = 0 if raw else hop * math.ceil(crossfade * sr / hop)
        shortest = hop * math.ceil(MIN_WINDOW_SECONDS * sr / hop)
        self.context = max(self.fade, shortest, hop * math.ceil(context * sr / hop))
        self.min_samples = shortest if raw else 1  # a crossfaded chunk is converted with its context
        self._ramp = np.linspace(0, 1, self.fade, endpoint=False, dtype=np.float32) + 0.5 / max(self.fade, 1)
        self.reset()
        # The F0 predictor loads on first use (and fails there for an unknown name): convert a bit of silence
        # now, so that the first chunk is not slow.
        self.process(np.zeros(self.min_samples, np.float32), next(iter(svc.spk2id)))
        self.reset()

    @property
    def sample_rate(self) -> int:
        return self.svc.target_sample

    @property
    def delay_seconds(self) -> float:
        """How far the output runs behind the input (the crossfade), on top of the conversion time."""
        return self.fade / self.sample_rate

    def reset(self) -> None:
        """Forget the stream: the next chunk starts from silence."""
        self._history = np.zeros(self.context + self.svc.hop_size, dtype=np.float32)
        self._tail = np.zeros(self.fade, dtype=np.float32)

    def process(self, chunk: np.ndarray, speaker: str | int, tran: float = 0) -> np.ndarray:
        """Convert the next chunk float32 [n] at the model rate for `speaker` (name or id), `tran` semitones:
        float32 [n]. SvcError for an unknown speaker, a transposition out of range or a too short raw chunk."""
        chunk = np.asarray(chunk, dtype=np.float32)
        n = len(chunk)
        if n < self.min_samples:
            raise SvcError(f"raw mode needs chunks of at least {self.min_samples / self.sample_rate:.3f} s, "
                           f"got {n / self.sample_rate:.3f} s")
        self.svc.speaker_id(speaker)
        opts = InferOptions(tran=tran, **self.options)
        if self.raw:
            return pad_array(self.svc.convert_piece(chunk, speaker, opts)[0].numpy()[:n], n)
        hop = self.svc.hop_size
        ctx = self.context + (-(self.context + n)) % hop  # whole frames: the output lines up with the input
        window = np.concatenate([self._history[len(self._history) - ctx:], chunk])
        self._history = np.concatenate([self._history, chunk])[-(self.context + hop):]
        out = self.svc.convert_piece(window, speaker, opts)[0].numpy()
        fresh = out[ctx - self.fade:ctx]  # this conversion's version of the held-back samples
        joined = np.concatenate([self._tail + (fresh - self._tail) * self._ramp, out[ctx:len(window)]])
        self._tail = joined[n:]
        return joined[:n]

    def process_at(self, chunk: np.ndarray, sample_rate: int, speaker: str | int, tran: float = 0,
                   out_rate: int | None = None) -> np.ndarray:
        """`process` for a chunk [n] at `sample_rate`, answered at `out_rate` (default the same):
        float32 [ceil(n * out_rate / sample_rate)]."""
        out_rate = out_rate or sample_rate
        n_model = out_length(len(chunk), sample_rate, self.sample_rate)
        wav = resample(torch.from_numpy(np.asarray(chunk, dtype=np.float32)), sample_rate, self.sample_rate)
        out = self.process(wav.numpy()[:n_model], speaker, tran)
        return resample(torch.from_numpy(out), self.sample_rate, out_rate).numpy()[
            :out_length(len(chunk), sample_rate, out_rate)]
