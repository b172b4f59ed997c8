"""Song assembly: slice a song at silences, convert each (forced) piece with a callback, cross-fade, and stream
the result out in blocks as soon as they can no longer change, so memory is bounded by the longest slice."""
from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import BinaryIO, Callable, ContextManager, Iterator, Mapping

import numpy as np
import soundfile as sf
import torch

from inference.options import InferOptions, pad_array
from modules.slicer import ArraySource, Audio, Chunk, open_audio, slice_source
from inference.speaker_mix import build_mix_weights
from modules.audio_io import AudioReadError
from modules.audio_resample import resample

__all__ = ["Convert", "iter_song", "mix_frame_budget", "out_length", "piece_ranges", "read_wav"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
SILENCE_BLOCK = 1 << 16  # samples of zeros emitted at a time for silent chunks
# convert(wav float32 [L] at sr_out, speaker or mix weights [n_spk, frames], first frame) -> (audio [N], frames)
Convert = Callable[[np.ndarray, "str | int | torch.Tensor", int], "tuple[np.ndarray, int]"]


def out_length(n_in: int, sr_in: int, sr_out: int) -> int:
    """ceil(n_in * sr_out / sr_in) in exact integers (4.1's floating-point version sometimes gains a sample)."""
    return -(-n_in * sr_out // sr_in)


def piece_ranges(n: int, per: int, lg: int) -> list[tuple[int, int]]:
    """[start, end) of the forced pieces of an n-sample chunk (one piece when per = 0)."""
    return [(0, n)] if per <= 0 else [(i - lg if i - lg >= 0 else i, min(i + per, n)) for i in range(0, n, per)]


def mix_frame_budget(chunks: list[Chunk], sr: int, opts: InferOptions, sr_out: int, hop: int) -> int:
    """Speaker-mix frames 4.1 allots to a song: padded pieces (pad counted in input-rate samples), +1 per chunk."""
    per, lg, pad = int(opts.clip_seconds * sr), int(opts.lg_num * sr), int(sr * opts.pad_seconds)
    total = len(chunks)
    for chunk in chunks:
        pieces = [(0, chunk.length)] if chunk.silent else piece_ranges(chunk.length, per, lg)
        total += sum((out_length(end - start, sr, sr_out) + (0 if chunk.silent else 2 * pad)) // hop
                     for start, end in pieces)
    return total


def read_wav(raw: PathLike | BinaryIO, sr_out: int) -> np.ndarray:
    """First channel of a WAV (path or file object) resampled to `sr_out`: float32 [L]. AudioReadError: NaN/inf."""
    data, sr = sf.read(raw, dtype="float32", always_2d=True)
    source = ArraySource(data[:, 0], sr)
    source.name = os.fspath(raw) if isinstance(raw, (str, os.PathLike)) else source.name
    return resample(torch.from_numpy(source.read(0, source.n_samples))[None], int(sr), sr_out)[0].numpy()


class _Joiner:
    """Accumulates output, keeping the last `hold` samples back for a possible cross-fade."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.tail = np.zeros(0, dtype=np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Append `block`; return what can no longer change."""
        self.tail = np.concatenate([self.tail, block.astype(np.float32, copy=False)])
        cut = max(len(self.tail) - self.hold, 0)
        ready, self.tail = self.tail[:cut], self.tail[cut:]
        return ready

    def crossfade(self, piece: np.ndarray, span: int, skip: int, drop: int) -> np.ndarray:
        """Blend piece[skip:skip + span] into the tail ahead of its last `drop` samples (cut); returns the rest."""
        if len(self.tail) < span + drop or len(piece) < skip + span:
            logger.warning("cross-fade skipped: a piece is shorter than the -lg overlap")
            return piece
        fade = np.linspace(0, 1, span)
        end = len(self.tail) - drop
        blended = self.tail[end - span:end].astype(np.float64) * (1 - fade) + piece[skip:skip + span] * fade
        self.tail = np.concatenate([self.tail[:end - span], blended.astype(np.float32)])
        return piece[skip + span:]

    def flush(self) -> np.ndarray:
        ready, self.tail = self.tail, np.zeros(0, dtype=np.float32)
        return ready


def iter_song(convert: Convert, sr_out: int, hop: int, audio: Audio, speaker: str | int | Mapping[int, list],
              opts: InferOptions, progress: Callable[[int, int], None] | None = None,
              stage: Callable[[str], ContextManager[object]] = contextlib.nullcontext) -> Iterator[np.ndarray]:
    """Convert a song piece by piece; yield float32 blocks at `sr_out` (hop: samples per frame) that join into
    the song. speaker: passed to `convert` as is, or a validated mix map, made the song's weights [n_spk, frames]
    (SpkMixError when a segment covers no frame). progress(i, n): before chunk i of n, and (n, n) at the end.
    stage: wraps "slicing", "reading" and "piece preparation"."""
    source = open_audio(audio)
    try:
        if source.n_samples == 0:
            raise AudioReadError(source.name, "has no audio samples")
        sr = source.sample_rate
        with stage("slicing"):
            chunks = slice_source(source, opts.slice_db)
        if isinstance(speaker, Mapping):
            speaker = build_mix_weights(speaker, mix_frame_budget(chunks, sr, opts, sr_out, hop))
        per, lg = int(opts.clip_seconds * sr), int(opts.lg_num * sr)
        r = int(lg * opts.lgr_num)  # 4.1 blends the middle r samples of each -lg overlap and drops the rest
        cl = (lg - r) // 2
        pad_in, pad_out = int(sr * opts.pad_seconds), int(sr_out * opts.pad_seconds)
        joiner = _Joiner(hold=lg)
        frame = 0
        progress = progress or (lambda i, n: None)
        for index, chunk in enumerate(chunks):
            length = out_length(chunk.length, sr, sr_out)
            logger.info("#=====segment start, %ss====== (slice %d/%d)", round(chunk.length / sr, 3),
                        index + 1, len(chunks))
            progress(index, len(chunks))
            if chunk.silent:
                logger.info("jump empty segment")
                frame += length // hop
                for start in range(0, length, SILENCE_BLOCK):  # a long pause never sits in memory whole
                    yield joiner.push(np.zeros(min(SILENCE_BLOCK, length - start), dtype=np.float32))
                continue
            with stage("reading"):
                data = source.read(chunk.start, chunk.end)
            for k, (start, end) in enumerate(piece_ranges(len(data), per, lg)):
                piece = data[start:end]
                target = out_length(len(piece), sr, sr_out) if per > 0 else length
                if per > 0:
                    logger.info("###=====segment clip start, %ss======", round(len(piece) / sr, 3))
                with stage("piece preparation"):  # 4.1 hands each padded piece over as 16-bit WAV
                    buffer = io.BytesIO()
                    sf.write(buffer, np.pad(piece, pad_in).astype(np.float64), sr, format="WAV", subtype="PCM_16")
                    buffer.seek(0)
                    wav = read_wav(buffer, sr_out)
                out, n_frames = convert(wav, speaker, frame)
                frame += n_frames
                if pad_out > 0:  # with -p 0, 4.1 sliced [0:-0] and lost every piece; the audio is kept
                    out = out[pad_out:-pad_out]
                out = pad_array(out, target)
                if lg > 0 and k > 0:
                    out = joiner.crossfade(out, r, skip=cl, drop=lg - r - cl)
                yield joiner.push(out)
        yield joiner.flush()
        progress(len(chunks), len(chunks))
    finally:
        if source is not audio:
            source.close()
