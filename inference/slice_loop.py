"""The whole-song loop of 4.1's `slice_inference` (pipeline.md §7.2, §7.4, §7.11), streamed.

The song is sliced at silences (inference/slicer.py), each voiced chunk is optionally cut into forced
pieces of `clip_seconds` that start `lg_num` seconds early, every piece is padded, converted and
trimmed, neighbouring pieces are cross-faded, and silent chunks become zeros. Output leaves in
blocks as soon as it can no longer change; only the cross-fade overlap is held back, so memory is
bounded by the longest slice, not by the song.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Mapping

import numpy as np
import torch

from inference.options import InferOptions, SvcError, pad_array
from inference.slicer import AudioSource, Chunk, open_audio, slice_source
from inference.speaker_mix import build_mix_weights, validate_spk_mix_map

if TYPE_CHECKING:
    from inference.infer_tool import Svc

__all__ = ["iter_song", "mix_frame_budget", "out_length", "piece_ranges"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
WHISPER_MAX_SECONDS = 30.0
SILENCE_BLOCK = 1 << 16  # samples of zeros emitted at a time for silent chunks


def out_length(n_in: int, sr_in: int, sr_out: int) -> int:
    """Samples at `sr_out` for `n_in` input samples, ⌈n_in·sr_out/sr_in⌉ in exact integers.

    4.1 evaluates `ceil(n_in / sr_in * sr_out)` in floating point, which adds a sample when the
    quotient rounds up (e.g. 306 / 44100 * 44100 = 306.00000000000006).
    """
    return -(-n_in * sr_out // sr_in)


def piece_ranges(n: int, per: int, lg: int) -> list[tuple[int, int]]:
    """[start, end) of the forced pieces of an n-sample chunk (one piece when per = 0)."""
    if per <= 0:
        return [(0, n)]
    return [(i - lg if i - lg >= 0 else i, min(i + per, n)) for i in range(0, n, per)]


def mix_frame_budget(chunks: list[Chunk], sr: int, opts: InferOptions, sr_out: int, hop: int) -> int:
    """Total speaker-mix frames 4.1 allots to a song (quirk 17: padded pieces, +1 per chunk)."""
    per, lg = int(opts.clip_seconds * sr), int(opts.lg_num * sr)
    pad = int(sr * opts.pad_seconds)
    total = 0
    for chunk in chunks:
        if chunk.silent:
            total += out_length(chunk.length, sr, sr_out) // hop
            continue
        for start, end in piece_ranges(chunk.length, per, lg):
            total += (out_length(end - start, sr, sr_out) + 2 * pad) // hop
    return total + len(chunks)


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

    def crossfade(self, piece: np.ndarray, lg: int, r: int, cl: int, cr: int, retain_all: bool) -> np.ndarray:
        """Blend the start of `piece` into the held tail (§7.4); returns the part of `piece` to push."""
        fade = np.linspace(0, 1, lg if retain_all else r)
        keep, skip = (0, 0) if retain_all else (cr, cl)
        span = len(fade)
        if len(self.tail) < span + keep or len(piece) < skip + span:
            logger.warning("cross-fade skipped: a piece is shorter than the -lg overlap")
            return piece
        end = len(self.tail) - keep
        before = self.tail[end - span:end].astype(np.float64)
        blended = before * (1 - fade) + piece[skip:skip + span].astype(np.float64) * fade
        self.tail = np.concatenate([self.tail[:end - span], blended.astype(np.float32)])
        return piece[skip + span:]

    def flush(self) -> np.ndarray:
        ready, self.tail = self.tail, np.zeros(0, dtype=np.float32)
        return ready


def _mix_weights(svc: "Svc", spk: Mapping, chunks: list[Chunk], sr: int, opts: InferOptions) -> torch.Tensor:
    mix_map = validate_spk_mix_map(spk, svc.spk2id)
    n_frames = mix_frame_budget(chunks, sr, opts, svc.target_sample, svc.hop_size)
    return build_mix_weights(mix_map, n_frames).to(svc.dev)


def _check_options(opts: InferOptions) -> None:
    if opts.pad_seconds < 0 or opts.clip_seconds < 0 or opts.lg_num < 0:
        raise SvcError("pad_seconds, clip (-cl) and linear_gradient (-lg) must be >= 0")
    if not 0 < opts.lgr_num <= 1:
        raise SvcError(f"linear_gradient_retain (-lgr) must be in (0, 1], got {opts.lgr_num}")


def iter_song(svc: "Svc", audio: PathLike | BinaryIO | AudioSource | tuple[np.ndarray, int],
              spk: str | int | Mapping, opts: InferOptions,
              progress: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
    """Convert a song for one speaker (or a mix map with `opts.use_spk_mix`); yield float32 blocks.

    The concatenated blocks equal 4.1's `slice_inference` output, except that `pad_seconds = 0`
    keeps the audio instead of emptying every piece (quirk 29).
    """
    _check_options(opts)
    mixing = opts.use_spk_mix and isinstance(spk, Mapping)
    if isinstance(spk, Mapping) and not mixing:
        raise SvcError("a speaker-mix map was given without use_spk_mix")
    if mixing and len(svc.spk2id) == 1:  # quirk 42: nothing to mix with one speaker
        spk, mixing = next(iter(svc.spk2id)), False
    elif mixing and not svc.spk_mix_enable:
        svc.enable_spk_mix()
    if not mixing:
        svc.speaker_id(spk)
        svc.check_cluster(opts.cluster_infer_ratio)
    if opts.auto_predict_f0 and not svc.has_f0_decoder:
        logger.warning("this model has no F0 predictor: -a/--auto_predict_f0 is ignored")
    source = open_audio(audio)
    try:
        sr = source.sample_rate
        chunks = slice_source(source, opts.slice_db)
        speaker = _mix_weights(svc, spk, chunks, sr, opts) if mixing else spk
        per, lg = int(opts.clip_seconds * sr), int(opts.lg_num * sr)
        r = int(lg * opts.lgr_num)
        cl = (lg - r) // 2
        cr = lg - r - cl
        pad_in, pad_out = int(sr * opts.pad_seconds), int(svc.target_sample * opts.pad_seconds)
        joiner = _Joiner(hold=lg)
        frame = 0
        for index, chunk in enumerate(chunks):
            length = out_length(chunk.length, sr, svc.target_sample)
            logger.info("#=====segment start, %ss====== (slice %d/%d)", round(chunk.length / sr, 3),
                        index + 1, len(chunks))
            if progress is not None:
                progress(index, len(chunks))
            if chunk.silent:
                logger.info("jump empty segment")
                frame += length // svc.hop_size
                for start in range(0, length, SILENCE_BLOCK):  # a long pause never sits in memory whole
                    yield joiner.push(np.zeros(min(SILENCE_BLOCK, length - start), dtype=np.float32))
                continue
            data = source.read(chunk.start, chunk.end)
            for k, (start, end) in enumerate(piece_ranges(len(data), per, lg)):
                piece = data[start:end]
                target = out_length(len(piece), sr, svc.target_sample) if per > 0 else length
                if per > 0:
                    logger.info("###=====segment clip start, %ss======", round(len(piece) / sr, 3))
                if svc.speech_encoder.startswith("whisper") and \
                        (len(piece) + 2 * pad_in) / sr > WHISPER_MAX_SECONDS:
                    raise SvcError(f"{svc.speech_encoder} supports at most {WHISPER_MAX_SECONDS:g} s per slice "
                                   f"(this one is {len(piece) / sr:.1f} s); use -cl 25 -lg 1")
                padded = np.concatenate([np.zeros(pad_in), piece.astype(np.float64), np.zeros(pad_in)])
                wav = svc.pcm16_piece(padded, sr)
                out, n_frames = svc.convert_piece(wav, speaker, opts, frame)
                frame += n_frames
                out = out.numpy()
                if pad_out > 0:  # quirk 29: 4.1 sliced [0:-0] and lost everything
                    out = out[pad_out:-pad_out]
                out = pad_array(out, target)
                if lg > 0 and k > 0:
                    out = joiner.crossfade(out, lg, r, cl, cr, retain_all=opts.lgr_num == 1)
                yield joiner.push(out)
        yield joiner.flush()
        if progress is not None:
            progress(len(chunks), len(chunks))
    finally:
        if source is not audio:
            source.close()

