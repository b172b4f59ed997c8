"""Tutorial step 1 (`resample.py`): every clip of `dataset_raw/<speaker>/` -> 44.1 kHz mono int16 WAV.

Silent or unreadable clips are reported and skipped; outputs are written atomically, and a clip whose output
is newer than its source is not redone unless `overwrite`.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from core.atomic import DiskFullError, remove_stale_temps, write_bytes_atomic
from core.features import clip_problem, list_speakers
from modules.audio_io import AudioReadError, read_audio_mono, resample_audio, write_wav_int16

__all__ = ["ClipJob", "ClipOutcome", "ResampleSummary", "SilentAudioError", "TRIM_TOP_DB", "default_workers",
           "format_summary", "list_jobs", "output_name", "prepare_clip", "resample_dataset", "resample_file",
           "to_int16", "trim_silence"]

PathLike = str | os.PathLike

TRIM_TOP_DB = 40.0  # 4.1's librosa.effects.trim threshold
# Peaks at or below one 16-bit step are digital silence (or dither): normalising them would blow
# noise up to full scale, and an all-zero clip would give 0/0 = NaN.
SILENCE_PEAK = 1.0 / 32768.0
# Names other than 4.1's "*wav" that are decoded too; their output is renamed to `<stem>.wav`.
EXTRA_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")


class SilentAudioError(AudioReadError):
    """The clip holds no signal (all samples within one 16-bit step of zero) after trimming."""


@dataclass(frozen=True)
class ClipJob:
    """One input clip: `src` under `<in_dir>/<speaker>/`, written to `dst` under `<out_dir>/<speaker>/`."""

    speaker: str
    src: str
    dst: str


@dataclass(frozen=True)
class ClipOutcome:
    """What happened to one clip. `status`: "written", "up to date" (skipped re-run) or "failed"."""

    job: ClipJob
    status: Literal["written", "up to date", "failed"]
    reason: str = ""


@dataclass
class ResampleSummary:
    """All outcomes of one run, in speaker order then file-name order."""

    outcomes: list[ClipOutcome] = field(default_factory=list)
    workers: int = 1

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[ClipOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


# --- per-clip signal processing ---
def trim_silence(x: np.ndarray, top_db: float = TRIM_TOP_DB) -> np.ndarray:
    """Leading and trailing silence of float32 `x` `[L]` cut by `librosa.effects.trim` (4.1's call)."""
    if len(x) == 0:
        return x
    import librosa  # heavy import, paid once per worker process

    return librosa.effects.trim(x, top_db=top_db)[0]


def to_int16(x: np.ndarray, clip: bool) -> np.ndarray:
    """4.1's int16 conversion of float32 `x` `[L]`: `x * 32767` truncated toward zero (no rounding); `clip`
    limits to the int16 range first, as un-normalised audio (`--skip_loudnorm`) would wrap around."""
    scaled = np.asarray(x, dtype=np.float32) * np.float32(32767)
    if clip:
        scaled = np.clip(scaled, -32768.0, 32767.0)
    return scaled.astype(np.int16)


def prepare_clip(x: np.ndarray, sr: int, target_sr: int, loudnorm: bool, name: str = "clip") -> np.ndarray:
    """Decoded mono float32 `x` `[L]` at `sr` -> the int16 samples resample.py stores: trim silence (-40 dB),
    peak guard (x > 1 -> 0.98 x / peak), resample, peak-normalise to full scale if `loudnorm`, truncate
    `x * 32767`. Returns int16 [ceil(L_trimmed * target_sr / sr)]; raises SilentAudioError (naming `name`)
    when only digital silence is left."""
    x = trim_silence(x)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= SILENCE_PEAK:
        raise SilentAudioError(name, "silent after trimming; skipped")
    if peak > 1.0:
        x = np.float32(0.98) * x / np.float32(peak)
    y = resample_audio(x, sr, target_sr)
    if loudnorm:
        y_peak = np.max(np.abs(y))
        if not y_peak > 0:
            raise SilentAudioError(name, "silent after resampling; skipped")
        y = y / y_peak
    return to_int16(y, clip=not loudnorm)


def resample_file(job: ClipJob, target_sr: int, loudnorm: bool, overwrite: bool = False) -> ClipOutcome:
    """Convert one clip (in a worker process: picklable in and out); problems go into the outcome."""
    # An earlier run finished it: newer than the source and a non-empty mono 16-bit WAV at target_sr.
    if not overwrite and os.path.isfile(job.dst) and os.path.getmtime(job.dst) >= os.path.getmtime(job.src):
        problem, seconds = clip_problem(job.dst, target_sr)
        if not problem and seconds > 0:
            return ClipOutcome(job, "up to date")
    try:
        x, sr = read_audio_mono(job.src)
        pcm = prepare_clip(x, sr, target_sr, loudnorm, name=job.src)
    except AudioReadError as err:
        return ClipOutcome(job, "failed", err.reason)
    except (FileNotFoundError, MemoryError) as err:
        return ClipOutcome(job, "failed", str(err) or type(err).__name__)
    try:
        os.makedirs(os.path.dirname(job.dst) or ".", exist_ok=True)
        buffer = io.BytesIO()
        write_wav_int16(buffer, pcm, target_sr)
        write_bytes_atomic(job.dst, buffer.getvalue())
    except DiskFullError:
        raise  # every later clip would fail the same way: the run stops
    except OSError as err:
        return ClipOutcome(job, "failed", f"cannot write {job.dst}: {err.strerror or err}")
    return ClipOutcome(job, "written")


# --- dataset walk and worker pool ---
def output_name(name: str) -> str | None:
    """Output file name for an input name, or None when the file is not audio to convert."""
    if name.startswith("."):
        return None
    # 4.1 rule: the name ends with "wav" and contains ".wav"; the name is kept as it is.
    if name.endswith("wav") and ".wav" in name:
        return name
    stem, suffix = os.path.splitext(name)
    if stem and suffix.lower() in EXTRA_SUFFIXES:
        return stem + ".wav"
    return None


def list_jobs(in_dir: PathLike, out_dir: PathLike) -> tuple[list[tuple[str, list[ClipJob]]], list[ClipOutcome]]:
    """The clips to convert: per speaker folder of `in_dir` (loose files are ignored), its non-hidden audio
    files, sorted. Returns ([(speaker, jobs)], conflicts), `conflicts` being failed outcomes of inputs whose
    renamed output (`a.flac` -> `a.wav`) collides with another clip; FileNotFoundError without `in_dir`."""
    in_dir, out_dir = os.fspath(in_dir), os.fspath(out_dir)
    if not os.path.isdir(in_dir):
        raise FileNotFoundError(f"input folder {in_dir} not found: put one sub-folder per speaker with its "
                                "clips there")
    speakers: list[tuple[str, list[ClipJob]]] = []
    conflicts: list[ClipOutcome] = []
    for speaker in list_speakers(in_dir):
        spk_dir = os.path.join(in_dir, speaker)
        remove_stale_temps(os.path.join(out_dir, speaker))  # left by a run that was killed mid-write
        jobs: dict[str, ClipJob] = {}
        names = sorted(n for n in os.listdir(spk_dir) if os.path.isfile(os.path.join(spk_dir, n)))
        # Names that keep their spelling claim their output first, then the renamed ones.
        names.sort(key=lambda n: output_name(n) != n)
        for name in names:
            out_name = output_name(name)
            if out_name is None:
                continue
            job = ClipJob(speaker, os.path.join(spk_dir, name), os.path.join(out_dir, speaker, out_name))
            if out_name in jobs:
                other = os.path.basename(jobs[out_name].src)
                conflicts.append(ClipOutcome(job, "failed", f"its output {out_name} is already made from {other}"))
                continue
            jobs[out_name] = job
        speakers.append((speaker, sorted(jobs.values(), key=lambda j: j.src)))
    return speakers, conflicts


def default_workers(cpu_count: int | None = None) -> int:
    """4.1's pool size: 30 on machines with more than 60 CPUs, CPUs - 2 with more than 4, else 1."""
    n = (os.cpu_count() or 1) if cpu_count is None else cpu_count
    return 30 if n > 60 else (n - 2 if n > 4 else 1)


def resample_dataset(in_dir: PathLike = "./dataset_raw", out_dir: PathLike = "./dataset/44k",
                     target_sr: int = 44100, loudnorm: bool = True, workers: int | None = None,
                     overwrite: bool = False, progress: bool = True) -> ResampleSummary:
    """Convert every speaker folder of `in_dir` into `out_dir/<speaker>/` (resample.py).

    workers: process count; None = 4.1's rule (`default_workers`), 0 = one per CPU, 1 = no pool.
    overwrite: redo clips whose output is up to date. progress: print `CPU count`, each speaker folder and
    a progress bar. Returns every clip's outcome (a failed clip does not stop the run, a full disk does:
    DiskFullError); raises FileNotFoundError without `in_dir`.
    """
    from tqdm import tqdm

    speakers, conflicts = list_jobs(in_dir, out_dir)
    cpus = os.cpu_count() or 1
    n_workers = default_workers(cpus) if workers is None else (cpus if workers == 0 else workers)
    if n_workers < 0:
        raise ValueError(f"worker count must be >= 0, got {workers}")
    if progress:
        print(f"CPU count: {cpus}", flush=True)
    results: dict[ClipJob, ClipOutcome] = {}
    pool = ProcessPoolExecutor(max_workers=n_workers) if n_workers > 1 else None
    try:
        # Everything is submitted up front so the pool never idles between speakers.
        futures = {speaker: [pool.submit(resample_file, j, target_sr, loudnorm, overwrite) for j in jobs]
                   for speaker, jobs in speakers} if pool else {}
        for speaker, jobs in speakers:
            if progress:
                print(os.path.join(os.fspath(in_dir), speaker), flush=True)
            done = (f.result() for f in as_completed(futures[speaker])) if pool else (
                resample_file(job, target_sr, loudnorm, overwrite) for job in jobs)
            for outcome in tqdm(done, total=len(jobs), desc="resampling", disable=not progress):
                results[outcome.job] = outcome
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return ResampleSummary([results[j] for _, jobs in speakers for j in jobs] + conflicts, n_workers)


def format_summary(summary: ResampleSummary, target_sr: int = 44100) -> str:
    """Closing report: counts, then one line per skipped clip with its reason."""
    written, done, failed = summary.count("written"), summary.count("up to date"), summary.failed
    lines = [f"Done: {written} written, {done} already up to date (not redone), "
             f"{len(failed)} skipped because of problems; output {target_sr} Hz mono 16-bit PCM."]
    if failed:
        lines.append("Skipped clips:")
        lines.extend(f"  {o.job.src}: {o.reason}" for o in failed)
    return "\n".join(lines)
