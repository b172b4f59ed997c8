"""Tutorial step 2.4.0 (`slice_audio.py`): cut the long recordings of `dataset_raw/<speaker>/` into pieces.

Cuts are found by the silence slicer inference uses (the openvpi audio-slicer's algorithm and parameters), then
the tutorial's length rules apply: a piece longer than `max_seconds` is split again at its quietest point, and
one shorter than `min_seconds` is joined with a neighbour it touches (no silence trimmed between them) if the
result stays within `max_seconds`. A piece still outside the limits is kept and reported with the reason. Pieces
are `<stem>_<index>.wav` at the source rate, mono (channels averaged, as resample.py reads them), holding the
decoded samples exactly: 16-bit PCM when every sample is a 16-bit step, else 32-bit float.

In place (the default) the pieces go beside the recording, which is then moved into `<speaker>/.unsliced/`; the
`<stem>_<n>.wav` files of a stem kept there are pieces and are never sliced again. With `out_dir` the pieces go
to `out_dir/<speaker>/` and the recordings stay where they are. An existing piece file is only accepted when it
holds exactly what would be written (a re-run, or a run killed before the move); anything else refuses that
recording with the clash named, so nothing is ever overwritten.
"""
from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import soundfile as sf

from core.atomic import DiskFullError, remove_stale_temps, write_bytes_atomic
from core.features import list_speakers
from modules.slicer import ArraySource, Slicer, rms_frames
from modules.audio_io import AudioReadError, read_audio_mono, write_wav_int16
from prep.resample import output_name

__all__ = ["FileOutcome", "Piece", "SliceSettings", "SpeakerReport", "UNSLICED",
           "format_report", "plan_pieces", "slice_dataset", "slice_file", "wav_bytes"]

PathLike = str | os.PathLike
Span = tuple[int, int]  # samples [start, end) of a source

UNSLICED = ".unsliced"  # where in-place slicing keeps the original recordings
_PIECE_NAME = re.compile(r"(.+)_\d+\.wav")


@dataclass(frozen=True)
class SliceSettings:
    """The length rules (seconds) and the silence slicer's parameters: threshold in dB (RMS below it is
    silence), lengths in ms. Slicer defaults are the audio-slicer's; for singing lower min_interval to 100 or
    50 ms, since sung phrases rarely pause for 300 ms."""

    min_seconds: float = 4.0
    max_seconds: float = 15.0
    db_thresh: float = -40.0
    min_length: int = 5000
    min_interval: int = 300
    hop_size: int = 10
    max_sil_kept: int = 500

    def slicer(self, sr: int) -> Slicer:
        """The silence slicer at rate `sr`; ValueError for parameters it cannot use."""
        return Slicer(sr, self.db_thresh, self.min_length, self.min_interval, self.hop_size, self.max_sil_kept)


@dataclass(frozen=True)
class Piece:
    """Samples [start, end) of the source; `why` says why it is still outside the length limits, if it is."""

    start: int
    end: int
    why: str = ""


def _split_long(a: int, b: int, rms: np.ndarray, hop: int, min_n: int, max_n: int) -> tuple[list[Span], list[int]]:
    """Cut samples [a, b) at quietest RMS frames until no part exceeds `max_n` samples: at most `2 max_n` in two
    parts of at least `min_n` where the length allows, a longer stretch by first cutting off a part of `max_n / 2`
    to `max_n`. Returns (parts in order, cut samples)."""
    done, cuts, todo = [], [], [(a, b)]
    while todo:
        a, b = todo.pop()
        if b - a <= max_n:
            done.append((a, b))
            continue
        if b - a <= 2 * max_n:  # one cut is enough: both parts at most max_n, at least min_n if possible
            lo, hi = max(a + min_n, b - max_n), min(a + max_n, b - min_n)
            lo, hi = (lo, hi) if lo <= hi else (b - max_n, a + max_n)
        else:
            lo, hi = a + max(min_n, max_n // 2, 1), a + max_n  # a first part of half to all of max_n
        first, last = -(-lo // hop), hi // hop
        cut = (first + int(np.argmin(rms[first:last + 1]))) * hop if first <= last else (lo + hi) // 2
        cuts.append(cut)
        todo += [(cut, b), (a, cut)]
    return sorted(done), sorted(cuts)


def _join_short(spans: list[Span], min_n: int, max_n: int, sr: int) -> list[Piece]:
    """Join each span shorter than `min_n` with a touching neighbour (the shorter join first) while the join
    stays within `max_n`; the spans still short get their reason."""
    spans = list(spans)

    def neighbours(i: int) -> list[int]:
        return [j for j in (i - 1, i + 1) if 0 <= j < len(spans) and spans[min(i, j)][1] == spans[max(i, j)][0]]

    joined = True
    while joined:
        joined = False
        for i, (a, b) in enumerate(spans):
            options = sorted((max(b, spans[j][1]) - min(a, spans[j][0]), j) for j in neighbours(i))
            options = [j for n, j in options if n <= max_n]
            if b - a < min_n and options:
                lo, hi = sorted((i, options[0]))
                spans[lo:hi + 1] = [(spans[lo][0], spans[hi][1])]
                joined = True
                break
    pieces = []
    for i, (a, b) in enumerate(spans):
        why = ""
        if b - a < min_n:
            why = (f"the recording holds only {(b - a) / sr:.1f} s of sound" if len(spans) == 1 else
                   f"joined with its neighbour it would be over {max_n / sr:g} s" if neighbours(i) else
                   "no neighbour touches it (silence was trimmed in between)")
        pieces.append(Piece(a, b, why))
    return pieces


def plan_pieces(x: np.ndarray, sr: int, settings: SliceSettings) -> tuple[list[Piece], list[tuple[int, float]]]:
    """The pieces of mono float32 `x` [N] at `sr`: ([] when no frame reaches the threshold, cuts made inside
    sound as (sample, RMS dB)). The samples between pieces are the silences the slicer trimmed."""
    slicer = settings.slicer(sr)
    source = ArraySource(x, sr)
    hop = slicer.hop_size
    rms = rms_frames(source, slicer.win_size, hop)
    if not (rms >= slicer.threshold).any():
        return [], []
    min_n, max_n = round(settings.min_seconds * sr), round(settings.max_seconds * sr)
    spans, loud_cuts = [], []
    for chunk in slicer.chunks(source, rms):
        if not chunk.silent and chunk.length:
            parts, cuts = _split_long(chunk.start, chunk.end, rms, hop, min_n, max_n)
            spans += parts
            levels = [(cut, float(rms[min(round(cut / hop), len(rms) - 1)])) for cut in cuts]
            loud_cuts += [(cut, 20 * math.log10(v)) for cut, v in levels if v >= slicer.threshold]
    return _join_short(spans, min_n, max_n, sr), loud_cuts


def wav_bytes(samples: np.ndarray, sr: int) -> bytes:
    """A mono WAV file holding float32 `samples` [L] exactly: 16-bit PCM when every sample is a 16-bit step
    (as decoded from a 16-bit source), else 32-bit float."""
    steps = samples * np.float32(32768)
    buffer = io.BytesIO()
    if len(steps) and steps.min() >= -32768 and steps.max() <= 32767 and np.array_equal(steps, np.round(steps)):
        write_wav_int16(buffer, steps.astype(np.int16), sr)
    else:
        sf.write(buffer, samples, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@dataclass
class FileOutcome:
    """One recording. status: "sliced" (pieces written or the original moved aside), "up to date" (every piece
    already there), "failed" (left as it was; `reason`). pieces: (file name, seconds, why outside the limits);
    loud_cuts: (second, RMS dB) of the cuts made inside sound."""

    src: str
    status: Literal["sliced", "up to date", "failed"]
    reason: str = ""
    pieces: list[tuple[str, float, str]] = field(default_factory=list)
    loud_cuts: list[tuple[float, float]] = field(default_factory=list)


def _read_or_none(path: str) -> bytes | None:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def slice_file(src: PathLike, dst_dir: PathLike, settings: SliceSettings, keep_dir: PathLike | None = None
               ) -> FileOutcome:
    """Slice one recording into `dst_dir`, then move it into `keep_dir` when given. Problems go into the outcome
    and leave every file as it was; a full disk raises DiskFullError."""
    src, dst_dir = os.fspath(src), os.fspath(dst_dir)
    name = os.path.basename(src)
    if keep_dir is not None and os.path.exists(os.path.join(keep_dir, name)):
        return FileOutcome(src, "failed", f"{UNSLICED}/ already holds a recording named {name}; rename this one")
    try:
        x, sr = read_audio_mono(src)
        pieces, loud_cuts = plan_pieces(x, sr, settings)
    except (AudioReadError, FileNotFoundError, MemoryError) as err:
        return FileOutcome(src, "failed", getattr(err, "reason", None) or str(err) or type(err).__name__)
    except ValueError as err:  # slicer parameters that do not fit this sample rate
        return FileOutcome(src, "failed", f"{sr} Hz: {err}")
    if not pieces:
        return FileOutcome(src, "failed", f"no sound above {settings.db_thresh:g} dB: nothing to slice")
    stem = os.path.splitext(name)[0]
    files = [(os.path.join(dst_dir, f"{stem}_{i}.wav"), wav_bytes(x[p.start:p.end], sr))
             for i, p in enumerate(pieces)]
    present = [_read_or_none(path) for path, _ in files]
    clashes = [os.path.basename(path) for (path, data), old in zip(files, present) if old not in (None, data)]
    if clashes:
        return FileOutcome(src, "failed", f"{', '.join(clashes)} already exist(s) with other content (another "
                                          "recording, or slicing with other settings): move it away and run again")
    try:
        os.makedirs(dst_dir, exist_ok=True)
        for (path, data), old in zip(files, present):
            if old is None:
                write_bytes_atomic(path, data)
        if keep_dir is not None:
            os.makedirs(keep_dir, exist_ok=True)
            os.replace(src, os.path.join(keep_dir, name))
    except DiskFullError:
        raise  # every later recording would fail the same way: the run stops
    except OSError as err:
        return FileOutcome(src, "failed", f"cannot write into {dst_dir}: {err.strerror or err}")
    status = "sliced" if keep_dir is not None or None in present else "up to date"
    return FileOutcome(src, status, "", [(os.path.basename(path), (p.end - p.start) / sr, p.why)
                                         for (path, _), p in zip(files, pieces)],
                       [(cut / sr, db) for cut, db in loud_cuts])


@dataclass
class SpeakerReport:
    """One speaker folder: its recordings' outcomes, files that are not audio (left alone), and the pieces of
    recordings sliced by an earlier run (in place only)."""

    speaker: str
    files: list[FileOutcome] = field(default_factory=list)
    not_audio: list[str] = field(default_factory=list)
    earlier_pieces: int = 0


def slice_dataset(in_dir: PathLike = "./dataset_raw", out_dir: PathLike | None = None,
                  settings: SliceSettings = SliceSettings(), progress: bool = True) -> list[SpeakerReport]:
    """Slice every recording of the speaker folders of `in_dir` (in place, or into `out_dir/<speaker>/`).
    Raises FileNotFoundError without `in_dir`, ValueError when `out_dir` is `in_dir`, DiskFullError."""
    in_dir = os.fspath(in_dir)
    if not os.path.isdir(in_dir):
        raise FileNotFoundError(f"input folder {in_dir} not found: put one sub-folder per speaker with its "
                                "recordings there")
    if out_dir is not None and os.path.commonpath([os.path.realpath(out_dir), os.path.realpath(in_dir)]) == \
            os.path.realpath(in_dir):  # pieces there would be taken for a speaker or a recording next time
        raise ValueError(f"--out_dir {os.fspath(out_dir)} lies in the input folder {in_dir}: leave it out to "
                         "slice in place, or choose a folder outside it")
    reports = []
    for speaker in list_speakers(in_dir):
        src_dir = os.path.join(in_dir, speaker)
        dst_dir = src_dir if out_dir is None else os.path.join(out_dir, speaker)
        keep_dir = os.path.join(src_dir, UNSLICED) if out_dir is None else None
        remove_stale_temps(dst_dir)  # left by a run that was killed mid-write
        kept = {os.path.splitext(n)[0] for n in os.listdir(keep_dir)} if keep_dir and os.path.isdir(keep_dir) else set()
        report = SpeakerReport(speaker)
        for name in sorted(os.listdir(src_dir)):
            path = os.path.join(src_dir, name)
            if name.startswith(".") or not os.path.isfile(path):
                continue
            piece = _PIECE_NAME.fullmatch(name)
            if output_name(name) is None:
                report.not_audio.append(name)
            elif piece and piece.group(1) in kept:
                report.earlier_pieces += 1
            else:
                if progress:
                    print(f"slicing {path}", flush=True)
                report.files.append(slice_file(path, dst_dir, settings, keep_dir))
                if keep_dir and report.files[-1].status != "failed":  # moved: its pieces, listed later, stay
                    kept.add(os.path.splitext(name)[0])
        reports.append(report)
    return reports


def _histogram(seconds: list[float], settings: SliceSettings) -> list[str]:
    """Text bars of piece lengths: below min_seconds, steps of about a fifth of the range, up to max_seconds."""
    lo, hi = settings.min_seconds, settings.max_seconds
    step = max(1.0, round((hi - lo) / 5))
    edges = sorted({0.0, hi, *(lo + k * step for k in range(math.ceil((hi - lo) / step)))})
    lines = []
    for left, right in zip(edges, edges[1:]):
        count = sum(left <= s < right or (right == hi and s == hi) for s in seconds)
        lines.append(f"    {f'{left:g}-{right:g} s':>7} {'#' * min(count, 40):<40} {count}")
    return lines


def format_report(reports: list[SpeakerReport], settings: SliceSettings) -> str:
    """Per speaker: recordings in, pieces out, minutes, the length histogram, the pieces still outside the
    limits and why, cuts made inside sound, skipped and non-audio files; then the totals."""
    lines = []
    limits = f"{settings.min_seconds:g}-{settings.max_seconds:g} s"
    for r in reports:
        done = [f for f in r.files if f.status != "failed"]
        seconds = [s for f in done for _, s, _ in f.pieces]
        earlier = f"; {r.earlier_pieces} pieces from earlier runs left as they are" if r.earlier_pieces else ""
        lines.append(f"{r.speaker}: recordings in: {len(done)}, pieces out: {len(seconds)} "
                     f"({sum(seconds) / 60:.1f} min){earlier}")
        if seconds:
            lines += _histogram(seconds, settings)
        outside = [f"    {n} ({s:.1f} s): {why}" for f in done for n, s, why in f.pieces if why]
        lines += [f"  outside {limits}:"] + outside if outside else []
        lines += [f"  cut inside sound (no silence there): {os.path.basename(f.src)} at {t:.2f} s ({db:.0f} dB)"
                  for f in done for t, db in f.loud_cuts]
        lines += [f"  skipped {os.path.basename(f.src)}: {f.reason}" for f in r.files if f.status == "failed"]
        lines += [f"  left alone, not audio: {', '.join(r.not_audio)}"] if r.not_audio else []
    files = [f for r in reports for f in r.files]
    count = {s: sum(f.status == s for f in files) for s in ("sliced", "up to date", "failed")}
    lines.append(f"Done: sliced {count['sliced']}, already sliced {count['up to date']} (nothing written), "
                 f"skipped because of problems {count['failed']}.")
    return "\n".join(lines)
