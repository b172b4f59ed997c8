"""4.1's silence slicer, reading random-access audio sources so a long song is sliced without loading it whole."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf

from modules.audio_io import AudioReadError

__all__ = ["ArraySource", "Audio", "AudioSource", "Chunk", "FileSource", "Slicer", "chunks2audio", "cut",
           "open_audio", "rms_frames", "slice_source"]

PathLike = str | os.PathLike
_RMS_BATCH_FRAMES = 256  # RMS windows per read: 3.6 MB of squares at 44.1 kHz


@dataclass(frozen=True)
class Chunk:
    """One slicer chunk: samples [start, end) of the source; `silent` = the 4.1 "slice" flag."""

    start: int
    end: int
    silent: bool

    @property
    def length(self) -> int:
        return self.end - self.start


class AudioSource:
    """Mono float32 audio readable by sample range (channels averaged, as 4.1's loaders do)."""

    sample_rate: int
    n_samples: int
    name = "<audio>"  # for messages
    checked = True  # input audio, off for computed signals (a NaN there is not the input's fault)

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) as float32, zeros outside the signal; AudioReadError for NaN/inf when `checked`."""
        lo, hi = max(start, 0), min(end, self.n_samples)
        out = np.zeros(max(end - start, 0), dtype=np.float32)
        if hi > lo:
            out[lo - start:hi - start] = self._read(lo, hi)
        if self.checked and not np.isfinite(out).all():
            at = (start + int(np.argmin(np.isfinite(out)))) / self.sample_rate
            raise AudioReadError(self.name, f"contains NaN or infinite samples (at {at:.2f} s); fix the input")
        return out

    def _read(self, start: int, end: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying file (no-op for arrays)."""

    def __enter__(self) -> "AudioSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArraySource(AudioSource):
    """An in-memory signal: [N] mono or [N, channels] (averaged in float32)."""

    def __init__(self, samples: np.ndarray, sample_rate: int, checked: bool = True) -> None:
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim == 2:
            data = data.mean(axis=1, dtype=np.float32)
        if data.ndim != 1:
            raise ValueError(f"audio must be [N] or [N, channels], got shape {data.shape}")
        self.samples, self.sample_rate, self.n_samples = data, int(sample_rate), int(data.shape[0])
        self.checked = checked

    def _read(self, start: int, end: int) -> np.ndarray:
        return self.samples[start:end]


class FileSource(AudioSource):
    """A sound file opened once and read by seeking (libsndfile: WAV, FLAC, OGG, MP3, ...)."""

    def __init__(self, path: PathLike | BinaryIO) -> None:
        if isinstance(path, (str, os.PathLike)) and not os.path.isfile(path):
            raise FileNotFoundError(f"audio file {os.fspath(path)} not found")
        self.name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else self.name
        try:
            self._file = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioReadError(self.name, f"not a readable audio file ({err})") from None
        self.sample_rate, self.n_samples = int(self._file.samplerate), int(self._file.frames)

    def _read(self, start: int, end: int) -> np.ndarray:
        self._file.seek(start)
        data = self._file.read(end - start, dtype="float32", always_2d=True)
        # Float32 channel mean, like librosa.to_mono and 4.1's torch.mean over channels.
        return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)

    def close(self) -> None:
        self._file.close()


Audio = PathLike | BinaryIO | AudioSource | tuple[np.ndarray, int]


def open_audio(audio: Audio) -> AudioSource:
    """A path or file object, an existing source, or (samples, sample_rate) -> AudioSource."""
    if isinstance(audio, AudioSource):
        return audio
    if isinstance(audio, tuple):
        return ArraySource(audio[0], audio[1])
    return FileSource(audio)


def rms_frames(audio: np.ndarray | AudioSource, frame_length: int, hop_length: int) -> np.ndarray:
    """librosa ``feature.rms(y, frame_length, hop_length)`` (centred, zero padded) of samples [N] or a source,
    read a batch of frames at a time: float32 [1 + (N + 2 * (frame_length // 2) - frame_length) // hop_length]."""
    source = audio if isinstance(audio, AudioSource) else ArraySource(audio, 1, checked=False)
    half = frame_length // 2
    n_frames = 1 + (source.n_samples + 2 * half - frame_length) // hop_length
    out = np.empty(max(n_frames, 0), dtype=np.float32)
    for first in range(0, n_frames, _RMS_BATCH_FRAMES):
        count = min(_RMS_BATCH_FRAMES, n_frames - first)
        start = first * hop_length - half
        block = source.read(start, start + (count - 1) * hop_length + frame_length)
        # Windows as rows of contiguous samples, averaged along the row: librosa's summation order, bit for bit.
        rows = np.lib.stride_tricks.sliding_window_view(block, frame_length)[::hop_length]
        out[first:first + count] = np.sqrt(np.mean(np.square(rows, dtype=np.float32), axis=1))
    return out


class Slicer:
    """4.1's silence slicer; lengths in milliseconds, threshold in dB (RMS below it is silence).
    ValueError unless min_length >= min_interval >= hop_size and max_sil_kept >= hop_size."""

    def __init__(self, sr: int, threshold: float = -40.0, min_length: int = 5000, min_interval: int = 300,
                 hop_size: int = 20, max_sil_kept: int = 5000) -> None:
        if not min_length >= min_interval >= hop_size:
            raise ValueError("The following condition must be satisfied: min_length >= min_interval >= hop_size")
        if not max_sil_kept >= hop_size:
            raise ValueError("The following condition must be satisfied: max_sil_kept >= hop_size")
        interval_samples = sr * min_interval / 1000
        self.threshold = 10 ** (threshold / 20.0)
        self.hop_size = round(sr * hop_size / 1000)
        self.win_size = min(round(interval_samples), 4 * self.hop_size)
        self.min_length = round(sr * min_length / 1000 / self.hop_size)
        self.min_interval = round(interval_samples / self.hop_size)
        self.max_sil_kept = round(sr * max_sil_kept / 1000 / self.hop_size)

    def silence_tags(self, rms: np.ndarray) -> list[tuple[int, int]]:
        """(first, last) frame of every silence to cut, from the frame RMS [frames]."""
        tags: list[tuple[int, int]] = []
        run_start: int | None = None
        clip_start = 0
        keep = self.max_sil_kept

        def argmin(lo: int, hi: int) -> int:  # inclusive range, first index on ties
            return int(np.argmin(rms[lo:hi + 1])) + lo

        for i, value in enumerate(rms):
            if value < self.threshold:
                if run_start is None:
                    run_start = i
                continue
            if run_start is None:
                continue
            s, run_start = run_start, None
            leading = s == 0 and i > keep
            long_enough = i - s >= self.min_interval and i - clip_start >= self.min_length
            if not leading and not long_enough:
                continue
            if i - s <= keep:  # a short silence is cut at its quietest frame
                left = right = argmin(s, i)
            else:  # a longer one keeps up to `keep` frames on each side
                left, right = argmin(s, s + keep), argmin(i - keep, i)
                if s and i - s <= 2 * keep:
                    pos = argmin(i - keep, s + keep)
                    left, right = min(left, pos), max(right, pos)
            tags.append((0 if s == 0 else left, right))
            clip_start = right
        total = len(rms)
        if run_start is not None and total - run_start >= self.min_interval:
            pos = argmin(run_start, min(total, run_start + keep))
            tags.append((pos, total + 1))
        return tags

    def chunks(self, source: AudioSource, rms: np.ndarray | None = None) -> list[Chunk]:
        """All chunks in 4.1 order, including the empty ones (start == end) that 4.1 lists too; `rms`: the
        source's `rms_frames(source, self.win_size, self.hop_size)` when the caller has them already."""
        n_samples, hop = source.n_samples, self.hop_size
        if n_samples <= self.min_length:  # 4.1 compares samples with frames: kept so chunks match
            return [Chunk(0, n_samples, False)]
        out: list[Chunk] = []
        end = 0
        rms = rms_frames(source, self.win_size, hop) if rms is None else rms
        for k, (first, last) in enumerate(self.silence_tags(rms)):
            if k or first:
                out.append(Chunk(end, min(n_samples, first * hop), False))
            out.append(Chunk(first * hop, min(n_samples, last * hop), True))
            end = last * hop
        if end < n_samples or not out:
            out.append(Chunk(end, n_samples, False))
        return out

    def slice(self, waveform: np.ndarray) -> dict[str, dict[str, object]]:
        """4.1 chunk dict of a [N] (or [channels, N], averaged) signal."""
        return _as_dict(self.chunks(ArraySource(np.asarray(waveform, dtype=np.float32).T, 1)))


def _as_dict(chunks: list[Chunk]) -> dict[str, dict[str, object]]:
    return {str(i): {"slice": c.silent, "split_time": f"{c.start},{c.end}"} for i, c in enumerate(chunks)}


def slice_source(source: AudioSource, db_thresh: float = -40, min_len: int = 5000) -> list[Chunk]:
    """The non-empty chunks of a source (what `cut` + `chunks2audio` keep), reading it in batches."""
    chunks = Slicer(source.sample_rate, threshold=db_thresh, min_length=min_len).chunks(source)
    return [c for c in chunks if c.start != c.end]


def cut(audio_path: PathLike, db_thresh: float = -30, min_len: int = 5000) -> dict[str, dict[str, object]]:
    """4.1's `cut`: the chunk dict of a file read at its native rate (channels averaged)."""
    with FileSource(audio_path) as source:
        return _as_dict(Slicer(source.sample_rate, threshold=db_thresh, min_length=min_len).chunks(source))


def chunks2audio(audio_path: PathLike,
                 chunks: dict[str, dict[str, object]]) -> tuple[list[tuple[bool, np.ndarray]], int]:
    """4.1's `chunks2audio`: (list of (silent, float32 samples), sample rate), empty chunks dropped."""
    with FileSource(audio_path) as source:
        parts = []
        for value in chunks.values():
            start, end = map(int, str(value["split_time"]).split(","))
            if start != end:
                parts.append((bool(value["slice"]), source.read(start, end)))
        return parts, source.sample_rate
