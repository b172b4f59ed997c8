"""The conversion report: how well each converted file keeps the source's pitch (moved by -t), loudness and
words, and how much it sounds like the target speaker's dataset clips and how little like the source singer.

All audio is compared at 44.1 kHz on 512-sample frames. A figure whose model is missing is skipped with a
one-line reason (`skipped`); the others still run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from core.checkpoint import CheckpointError
from core.config import ConfigError, load_config
from core.features import DatasetError, list_speakers
from evaluation.metrics import content_similarity, loudness_correlation, pitch_errors
from evaluation.speaker import cosine, optional_speaker_encoder
from modules.audio_io import AudioReadError, read_audio_mono, resample_audio
from modules.F0Predictor import get_f0_predictor

__all__ = ["CONVERSION_KEYS", "ConversionJob", "EvaluationError", "MAX_SPEAKER_CLIPS", "RATE", "HOP",
           "convert_report", "read_audio"]

logger = logging.getLogger(__name__)
RATE, HOP = 44100, 512
MAX_SPEAKER_CLIPS = 30  # a speaker's embedding averages at most this many of its clips, spread over the folder
LENGTH_TOLERANCE_S = 0.1  # a conversion may differ from its source by this much (or 1 %) in length
# JSON keys of one conversion row, in table order (README documents each).
CONVERSION_KEYS = ("file", "duration_s", "pitch_rmse_cents", "pitch_over_50_cents", "voicing_error", "pitch_frames",
                   "speaker_similarity_target", "speaker_similarity_source", "loudness_correlation",
                   "content_similarity")


class EvaluationError(ValueError):
    """evaluate.py cannot run as asked; the message says why and what to do."""


@dataclass
class ConversionJob:
    """What `evaluate.py -n ... -r ...` was asked (see its --help)."""

    source: str
    results: list[str]
    speaker: str
    semitones: float = 0.0
    dataset: str = "dataset/44k"
    config: str = "configs/config.json"
    f0_predictor: str = "fcpe"
    device: str | None = None
    pretrain: str = "pretrain"


def read_audio(path: str) -> np.ndarray:
    """Mono float32 audio of a file at RATE; EvaluationError when missing or unreadable."""
    try:
        audio, rate = read_audio_mono(path)
    except (FileNotFoundError, AudioReadError) as err:
        raise EvaluationError(str(err)) from None
    return resample_audio(audio, rate, RATE)


def speaker_clips(dataset: str, speaker: str) -> list[str]:
    """Up to MAX_SPEAKER_CLIPS evenly spread .wav clips of `dataset/<speaker>`; EvaluationError naming the
    speakers there when the folder has none."""
    folder = os.path.join(dataset, speaker)
    clips = sorted(f for f in os.listdir(folder) if f.endswith(".wav") and not f.startswith(".")) \
        if os.path.isdir(folder) else []
    if not clips:
        try:
            speakers = ", ".join(list_speakers(dataset)) or "none"
        except DatasetError as err:
            raise EvaluationError(f"speaker {speaker!r}: {err}") from None
        raise EvaluationError(f"{folder} has no .wav clips to compare the conversion with (speakers in "
                              f"{dataset}: {speakers}); check -s and --dataset")
    picks = np.unique(np.linspace(0, len(clips) - 1, min(len(clips), MAX_SPEAKER_CLIPS)).round().astype(int))
    return [os.path.join(folder, clips[i]) for i in picks]


def _content_units(job: ConversionJob, skipped: dict[str, str]) -> Callable[[np.ndarray], np.ndarray] | None:
    """`units(audio at RATE) -> [C, T]` with the config's speech encoder; None (reason in `skipped`) when the
    config or the encoder's file is missing."""
    from vencoder import get_speech_encoder

    try:
        name = load_config(job.config).model.get("speech_encoder") or "vec768l12"
        encoder = get_speech_encoder(name, job.device, job.pretrain)
    except (ConfigError, CheckpointError, FileNotFoundError, AttributeError, ValueError) as err:
        skipped["content_similarity"] = f"content similarity skipped: {str(err).splitlines()[0]}"
        return None

    def units(audio: np.ndarray) -> np.ndarray:
        wav16 = torch.from_numpy(resample_audio(audio, RATE, 16000)).to(encoder.device)
        with torch.no_grad():
            return encoder.encoder(wav16)[0].float().cpu().numpy()
    return units


def _matched(source: np.ndarray, result: np.ndarray, path: str, source_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Both signals cut to the shorter length; EvaluationError when their lengths differ by more than
    LENGTH_TOLERANCE_S and 1 %."""
    a, b = len(source) / RATE, len(result) / RATE
    if abs(a - b) > max(LENGTH_TOLERANCE_S, 0.01 * max(a, b)):
        raise EvaluationError(f"{path} lasts {b:.2f} s but the source {source_path} lasts {a:.2f} s: it is not a "
                              "conversion of this source (pass the -n file it was made from)")
    n = min(len(source), len(result))
    return source[:n], result[:n]


def convert_report(job: ConversionJob, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every figure of every `job.results` file against `job.source`: the JSON document of evaluate.py (keys
    in CONVERSION_KEYS per row; curves for the plot under the private key `_curves`)."""
    references = speaker_clips(job.dataset, job.speaker)
    source = read_audio(job.source)
    results = [read_audio(path) for path in job.results]
    pairs = [_matched(source, result, path, job.source) for result, path in zip(results, job.results)]
    tracker = get_f0_predictor(job.f0_predictor, HOP, RATE, job.device)
    skipped: dict[str, str] = {}
    encoder = optional_speaker_encoder(job.device, skipped)
    units = _content_units(job, skipped)
    target = None if encoder is None else encoder.embed_speaker([(read_audio(p), RATE) for p in references])
    f0_src, uv_src = tracker.compute_f0_uv(source)
    source_embedding = None if encoder is None else encoder.embed(source, RATE)
    source_units = None if units is None else units(source)
    rows, curves = [], []
    for path, (src, out) in zip(job.results, pairs):
        f0_out, uv_out = tracker.compute_f0_uv(out)
        n = min(len(f0_out), len(f0_src))
        pitch = pitch_errors(f0_src[:n], uv_src[:n], f0_out[:n], uv_out[:n], job.semitones)
        row: dict[str, Any] = {"file": path, "duration_s": round(len(out) / RATE, 3),
                               "pitch_rmse_cents": pitch["rmse_cents"], "pitch_over_50_cents": pitch["over_50_cents"],
                               "voicing_error": pitch["voicing_error"], "pitch_frames": pitch["frames"],
                               "speaker_similarity_target": None, "speaker_similarity_source": None,
                               "loudness_correlation": loudness_correlation(src, out, HOP), "content_similarity": None}
        if encoder is not None and target is not None and source_embedding is not None:
            embedding = encoder.embed(out, RATE)
            row["speaker_similarity_target"] = cosine(embedding, target)
            row["speaker_similarity_source"] = cosine(embedding, source_embedding)
        if units is not None and source_units is not None:
            row["content_similarity"] = content_similarity(source_units, units(out))
        rows.append(row)
        curves.append({"audio": out, "f0_source": f0_src[:n] * uv_src[:n] * 2.0 ** (job.semitones / 12.0),
                       "f0_result": f0_out[:n] * uv_out[:n]})
        progress(path)
    return {"kind": "conversion", "source": job.source, "speaker": job.speaker, "semitones": job.semitones,
            "f0_predictor": job.f0_predictor, "speaker_clips": len(references), "skipped": skipped,
            "conversions": rows, "_curves": curves}
