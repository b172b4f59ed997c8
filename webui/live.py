"""The Live tab's work, without gradio: microphone pieces in, converted chunks out, through the page's loaded
model and one `inference.streaming.StreamConverter` per microphone session.

The browser sends the recording in short 16-bit pieces at its own rate (48 kHz as a rule). One running
resampler (soxr's stream: no seam where two pieces meet) brings them to the model's rate, they are gathered
into chunks of the chosen length, and the stream converts each chunk, crossfaded with the one before it.
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from webui.state import ModelSlot

if TYPE_CHECKING:
    from inference.infer_tool import Svc
    from inference.streaming import StreamConverter

__all__ = ["LiveOptions", "LiveSession", "TAKE_SECONDS", "to_int16"]
TAKE_SECONDS = 120  # the converted take offered after Stop keeps the last two minutes


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class LiveOptions:
    """The Live tab's controls: chunk length and crossfade in seconds, transposition in semitones."""

    speaker: str
    tran: float = 0
    chunk_seconds: float = 0.5
    crossfade: float = 0.05
    f0_predictor: str = "fcpe"
    raw: bool = False


class LiveSession:
    """One microphone session: its stream (rebuilt when the model or the stream's options change), the
    resampler, the samples waiting for a whole chunk, the converted take and the time each chunk took."""

    def __init__(self) -> None:
        self.stream: StreamConverter | None = None
        self._built_for: tuple = ()
        self.reset()

    def reset(self) -> None:
        """A new signal: forget the stream's state, the waiting samples, the take and the timings."""
        if self.stream is not None:
            self.stream.reset()
        self._resampler, self._rate = None, 0
        self._pending = np.zeros(0, np.float32)
        self.paused = False  # a song conversion held the model: the stream starts over when it is done
        self.take: list[np.ndarray] = []
        self.timings: list[float] = []
        self.sent = 0  # chunks handed to the page's player since the start

    def _configure(self, svc: Svc, options: LiveOptions) -> StreamConverter:
        from inference.streaming import StreamConverter

        wanted = (options.f0_predictor, options.crossfade, options.raw)
        if self.stream is None or self.stream.svc is not svc or self._built_for != wanted:
            if self.stream is not None and self.stream.svc is not svc:  # another model, maybe another rate
                self._resampler, self._rate, self._pending = None, 0, np.zeros(0, np.float32)
                self.take = []
            self.stream = StreamConverter(svc, options.f0_predictor, crossfade=options.crossfade, raw=options.raw)
            self._built_for = wanted
        return self.stream

    def start(self, slot: ModelSlot, options: LiveOptions) -> None:
        """Get the stream ready for the loaded model (loads the F0 predictor) and start from silence."""
        with slot.holding() as svc:
            self._configure(svc, options)
            self.reset()

    def feed(self, slot: ModelSlot, rate: int, pcm: np.ndarray, options: LiveOptions) -> np.ndarray:
        """Add a microphone piece (int16 [n] or [n, channels] at `rate`); returns the chunks it completed,
        converted and joined (float32 at the model's rate; empty while a chunk is still filling)."""
        import soxr

        audio = pcm.astype(np.float32) / 32768
        audio = audio.mean(axis=1) if audio.ndim == 2 else audio
        if self.stream is not None and slot.converting.is_set():
            # Waiting for the song would stall the microphone for minutes: it gets silence, at its own pace.
            self.paused = True
            return self._keep(np.zeros(round(len(audio) * self.stream.sample_rate / rate), np.float32))
        outs = []
        with slot.holding() as svc:
            stream = self._configure(svc, options)
            if self.paused:  # what came before the pause is gone: start from silence again
                stream.reset()
                self._resampler, self._rate, self._pending, self.paused = None, 0, np.zeros(0, np.float32), False
            if rate != stream.sample_rate:
                if self._rate != rate:
                    self._resampler, self._rate = soxr.ResampleStream(rate, stream.sample_rate, 1, "float32"), rate
                audio = self._resampler.resample_chunk(audio)
            self._pending = np.concatenate([self._pending, audio])
            n = max(1, round(options.chunk_seconds * stream.sample_rate))
            while len(self._pending) >= n:
                chunk, self._pending = self._pending[:n], self._pending[n:]
                began = time.perf_counter()
                outs.append(stream.process(chunk, options.speaker, options.tran))
                self.timings.append(time.perf_counter() - began)
        return self._keep(np.concatenate(outs) if outs else np.zeros(0, np.float32))

    def _keep(self, out: np.ndarray) -> np.ndarray:
        """Add `out` to the take (its last TAKE_SECONDS) and return it."""
        if len(out):
            self.take.append(out)
            while sum(map(len, self.take)) - len(self.take[0]) > TAKE_SECONDS * self.stream.sample_rate:
                self.take.pop(0)
        return out

    def player_message(self, out: np.ndarray) -> str:
        """`out` for the page's player: "<rate>,<chunk number since the start>,<base64 of int16 LE samples>"."""
        pcm = to_int16(out).astype("<i2")
        self.sent += 1
        return f"{self.stream.sample_rate},{self.sent - 1},{base64.b64encode(pcm.tobytes()).decode()}"

    def finish(self) -> tuple[int, np.ndarray] | None:
        """Stop: the converted take (model rate, int16) or None; the stream starts over."""
        take = (self.stream.sample_rate, to_int16(np.concatenate(self.take))) if self.take else None
        self.reset()
        return take

    def latency(self, options: LiveOptions) -> str:
        """What the listener waits for, measured: chunk + crossfade + conversion time, and the real-time factor."""
        if self.paused:
            return "**Paused**: the model is converting a song; live conversion goes on when it is done."
        if not self.timings or self.stream is None:
            return "Listening: the first chunk is on its way."
        chunk = round(options.chunk_seconds * self.stream.sample_rate) / self.stream.sample_rate
        fade, work, last = self.stream.delay_seconds, float(np.median(self.timings)), self.timings[-1]
        rtf = work / chunk
        verdict = "keeps up" if rtf < 1 else "falls behind: longer chunks, raw mode or pm/FCPE help"
        return (f"**Latency about {chunk + fade + work:.2f} s** = chunk {chunk:.2f} s + crossfade {fade:.3f} s + "
                f"conversion {work:.3f} s (median of {len(self.timings)} chunks; last {last:.3f} s). "
                f"Real-time factor {rtf:.2f} ({verdict}).")
