"""slice_audio.py / prep/slicing.py: the tutorial's dataset slicing on the shared long edge clip and made-up signals.

Checked from the written files: every cut lies in a silence of the slicer's own RMS measure, the pieces are the
source minus silences sample for sample, lengths keep the limits unless the report says why, re-runs write
nothing, and nothing a user had is overwritten or lost.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import slice_audio
from conftest import DATA, ROOT
from core.features import clip_problem
from modules.slicer import rms_frames
from modules.audio_io import read_audio_mono
from prep.resample import resample_dataset
from prep.slicing import (UNSLICED, SliceSettings, SpeakerReport, format_report, plan_pieces, slice_dataset,
                          slice_file)

LONG = DATA / "edge" / "long_slt_60s.wav"
STEREO = DATA / "edge" / "stereo48k_slt.wav"


@pytest.fixture(scope="module")
def long_clip() -> tuple[np.ndarray, int]:
    if not LONG.exists():
        pytest.skip(f"{LONG} not available")
    return read_audio_mono(LONG)


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _locate(x: np.ndarray, piece: np.ndarray, after: int = 0) -> int | None:
    """First offset >= `after` where `piece` occurs in `x` sample for sample, or None."""
    for s in np.flatnonzero(x[after:len(x) - len(piece) + 1] == piece[0]) + after:
        if np.array_equal(x[s:s + 32], piece[:32]) and np.array_equal(x[s:s + len(piece)], piece):
            return int(s)
    return None


def _tone(sr: int, seconds: float, freq: float = 220.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


def test_long_clip_cuts_in_silences_and_pieces_are_the_source_minus_silences(long_clip, tmp_path) -> None:
    x, sr = long_clip
    settings = SliceSettings()
    outcome = slice_file(LONG, tmp_path, settings)
    assert outcome.status == "sliced" and outcome.loud_cuts == []
    names = [n for n, _, _ in outcome.pieces]
    assert names == [f"long_slt_60s_{i}.wav" for i in range(9)]  # the clip's nine phrases
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    pieces = [sf.read(tmp_path / n, dtype="float32") for n in names]
    assert all(rate == sr and p.ndim == 1 for p, rate in pieces)
    assert all(settings.min_seconds <= len(p) / sr <= settings.max_seconds for p, _ in pieces)
    # Place each written piece in the source: all in order, what lies between them (and around them) silent.
    slicer = settings.slicer(sr)
    hop, rms = slicer.hop_size, rms_frames(x, slicer.win_size, slicer.hop_size)
    pos, kept, trimmed = 0, [], 0
    for (piece, _), name in zip(pieces, names):
        start = _locate(x, piece, pos)
        assert start is not None, f"{name} is not a stretch of the source"
        gap = rms[pos // hop:start // hop + 1]
        assert gap.max() < slicer.threshold, f"sound trimmed before {name}"
        kept.append(x[start:start + len(piece)])
        trimmed += start - pos
        pos = start + len(piece)
    assert rms[pos // hop:].max() < slicer.threshold
    np.testing.assert_array_equal(np.concatenate(kept), np.concatenate([p for p, _ in pieces]))
    assert sum(len(k) for k in kept) + trimmed + len(x) - pos == len(x)
    assert 0.2 * sr < trimmed + len(x) - pos < 0.3 * len(x)  # silences between phrases went, not sound


def test_over_long_stretches_are_cut_at_their_quietest_point(long_clip, tmp_path) -> None:
    x, sr = long_clip
    # -90 dB is below the clip's noise floor: the slicer finds no silence, the length rule must cut.
    settings = SliceSettings(db_thresh=-90.0)
    pieces, loud_cuts = plan_pieces(x, sr, settings)
    assert len(pieces) >= 4 and all(not p.why for p in pieces)
    assert all(4 * sr <= p.end - p.start <= 15 * sr for p in pieces)
    assert [p.start for p in pieces[1:]] == [p.end for p in pieces[:-1]]  # nothing trimmed, nothing lost
    assert pieces[0].start == 0 and pieces[-1].end == len(x)
    # Each cut is reported as inside "sound" (above -90 dB) yet lies in one of the clip's real pauses.
    assert [cut for cut, _ in loud_cuts] == [p.start for p in pieces[1:]]
    assert all(db < -50 for _, db in loud_cuts)
    report = format_report([SpeakerReport("slt", [slice_file(LONG, tmp_path, settings)])], settings)
    first = loud_cuts[0]
    assert f"cut inside sound (no silence there): long_slt_60s.wav at {first[0] / sr:.2f} s ({first[1]:.0f} dB)" \
        in report


def test_short_pieces_join_touching_neighbours_or_say_why() -> None:
    sr = 8000  # an odd rate on purpose
    silence = lambda s: np.zeros(round(sr * s), dtype=np.float32)  # noqa: E731
    # 5 s | 0.35 s pause (cut at one point) | 1 s  -> joined;  2 s silence (trimmed) | 6 s | 2 s | 1 s -> alone;
    # then 14 s | 0.35 s pause | 2 s -> joining would pass 15 s.
    parts = [_tone(sr, 5), silence(0.35), _tone(sr, 1, 330), silence(2), _tone(sr, 6), silence(2),
             _tone(sr, 1, 330), silence(2), _tone(sr, 14), silence(0.35), _tone(sr, 2, 330), silence(0.05)]
    x = np.concatenate(parts)
    pieces, loud_cuts = plan_pieces(x, sr, SliceSettings(min_length=300, min_interval=100))
    seconds = [round((p.end - p.start) / sr, 1) for p in pieces]
    assert seconds == [6.4, 6.5, 1.5, 14.5, 2.4]  # pauses: whole to the next piece, 0.5 s kept at trims
    assert [bool(p.why) for p in pieces] == [False, False, True, False, True]
    assert pieces[0].end - pieces[0].start > 6 * sr  # the 1 s phrase went with the 5 s one
    assert pieces[2].why == "no neighbour touches it (silence was trimmed in between)"
    assert pieces[4].why == "joined with its neighbour it would be over 15 s"
    assert pieces[3].end == pieces[4].start and loud_cuts == []
    lone, _ = plan_pieces(np.concatenate([silence(1), _tone(sr, 2), silence(1)]), sr, SliceSettings())
    assert [p.why for p in lone] == ["the recording holds only 2.5 s of sound"]
    assert plan_pieces(silence(3) + np.float32(1e-4), sr, SliceSettings()) == ([], [])


@pytest.fixture
def project(tmp_path) -> Path:
    """dataset_raw/ with the long clip, a stereo 48 kHz clip, a non-audio file, a corrupt and a silent WAV."""
    if not STEREO.exists() or not LONG.exists():
        pytest.skip("shared edge clips not available")
    raw = tmp_path / "dataset_raw"
    (raw / "slt").mkdir(parents=True)
    shutil.copy(LONG, raw / "slt")
    shutil.copy(STEREO, raw / "slt")
    (raw / "slt" / "notes.txt").write_text("take 3 was best")
    (raw / "kal").mkdir()
    (raw / "kal" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00not a wave file at all")
    sf.write(raw / "kal" / "quiet.wav", np.zeros(8000, dtype=np.int16), 16000, subtype="PCM_16")
    return raw


def test_in_place_run_keeps_originals_reports_problems_and_a_rerun_writes_nothing(project, capsys) -> None:
    settings = SliceSettings()
    stereo_mono, _ = read_audio_mono(STEREO)
    reports = {r.speaker: r for r in slice_dataset(project, settings=settings, progress=False)}
    slt = project / "slt"
    assert sorted(os.listdir(slt / UNSLICED)) == ["long_slt_60s.wav", "stereo48k_slt.wav"]
    assert (slt / UNSLICED / "long_slt_60s.wav").read_bytes() == LONG.read_bytes()
    assert reports["slt"].not_audio == ["notes.txt"] and (slt / "notes.txt").exists()
    # The stereo 48 kHz clip: one mono piece at 48 kHz, the channel average exactly (32-bit float, not 16-bit).
    piece, rate = sf.read(slt / "stereo48k_slt_0.wav", dtype="float32")
    assert rate == 48000 and sf.info(slt / "stereo48k_slt_0.wav").subtype == "FLOAT"
    assert _locate(stereo_mono, piece) is not None
    assert sf.info(slt / "long_slt_60s_0.wav").subtype == "PCM_16"
    failed = {os.path.basename(f.src): f.reason for f in reports["kal"].files}
    assert "not a readable audio file" in failed["broken.wav"]
    assert failed["quiet.wav"] == "no sound above -40 dB: nothing to slice"
    assert sorted(os.listdir(project / "kal")) == ["broken.wav", "quiet.wav"]
    text = format_report(list(reports.values()), settings)
    assert "slt: recordings in: 2, pieces out: 10 (0.9 min)" in text
    assert "  skipped broken.wav: not a readable audio file" in text
    assert "left alone, not audio: notes.txt" in text
    assert "Done: sliced 2, already sliced 0 (nothing written), skipped because of problems 2." in text

    before = _snapshot(project)
    again = slice_dataset(project, settings=settings, progress=False)
    assert _snapshot(project) == before
    assert [len(r.files) for r in again] == [2, 0] and again[1].earlier_pieces == 10


def test_out_dir_rerun_and_clashes_lose_nothing(project, tmp_path) -> None:
    settings = SliceSettings()
    out = tmp_path / "sliced"
    shutil.rmtree(project / "kal")
    first = slice_dataset(project, out, settings, progress=False)
    assert [f.status for f in first[0].files] == ["sliced", "sliced"]
    assert (project / "slt" / "long_slt_60s.wav").exists()  # recordings stay with --out_dir
    before = _snapshot(tmp_path)
    second = slice_dataset(project, out, settings, progress=False)
    assert [f.status for f in second[0].files] == ["up to date", "up to date"] and _snapshot(tmp_path) == before
    # A run killed before moving the recording: in place, its identical pieces are accepted, then it moves.
    for name in os.listdir(out / "slt"):
        if name.startswith("long_slt_60s_"):
            shutil.copy(out / "slt" / name, project / "slt")
    (project / "slt" / "stereo48k_slt_0.wav").write_bytes(b"someone else's take")  # a clash
    (project / "slt" / "notes.txt").unlink()
    outcomes = {os.path.basename(f.src): f for f in slice_dataset(project, None, settings, progress=False)[0].files}
    assert outcomes["long_slt_60s.wav"].status == "sliced"
    assert not [n for n in outcomes if n.startswith("long_slt_60s_")]  # its pieces are not sliced once more
    assert outcomes["stereo48k_slt.wav"].status == "failed"
    assert outcomes["stereo48k_slt.wav"].reason.startswith("stereo48k_slt_0.wav already exist(s) with other content")
    assert (project / "slt" / "stereo48k_slt_0.wav").read_bytes() == b"someone else's take"
    assert (project / "slt" / "stereo48k_slt.wav").exists()
    # A new recording named like one already kept aside is refused, not moved over it.
    shutil.copy(LONG, project / "slt" / "long_slt_60s.wav")
    again = {os.path.basename(f.src): f for f in slice_dataset(project, None, settings, progress=False)[0].files}
    assert again["long_slt_60s.wav"].reason == f"{UNSLICED}/ already holds a recording named long_slt_60s.wav; " \
                                                 "rename this one"
    for inside in (project, project / "slt" / "pieces"):
        with pytest.raises(ValueError, match="lies in the input folder"):
            slice_dataset(project, inside, settings)


@pytest.mark.slow
def test_pieces_pass_the_next_tutorial_steps(project, tmp_path) -> None:
    shutil.rmtree(project / "kal")
    slice_dataset(project, settings=SliceSettings(), progress=False)
    summary = resample_dataset(project, tmp_path / "dataset" / "44k", workers=1, progress=False)
    assert summary.failed == [] and summary.count("written") == 10
    for outcome in summary.outcomes:
        problem, seconds = clip_problem(outcome.job.dst, 44100)
        assert problem == "" and 3.5 < seconds <= 15


def test_whisper_limit_and_option_errors(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        slice_audio.main(["--encoder", "whisper-ppg", "--max_seconds", "40"])
    assert err.value.code == 2
    assert "whisper-ppg reads at most 30 s per clip: use --max_seconds 30 or less" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        slice_audio.main(["--min_interval", "10", "--hop_size", "20"])
    assert "min_length >= min_interval >= hop_size" in capsys.readouterr().err
    assert slice_audio.main(["--in_dir", "/nonexistent/raw", "--max_seconds", "40"]) == 1
    err_text = capsys.readouterr().err
    assert "warning: pieces over 30 s break the whisper-ppg encoders" in err_text
    assert "input folder /nonexistent/raw not found" in err_text


@pytest.mark.slow
def test_cli_slices_a_project(project) -> None:
    shutil.rmtree(project / "kal")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(ROOT / "slice_audio.py"), "--min_interval", "100"],
                         cwd=project.parent, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "slt: recordings in: 2, pieces out: 10" in run.stdout
    assert "left alone, not audio: notes.txt" in run.stdout
    assert sorted(os.listdir(project / "slt" / UNSLICED)) == ["long_slt_60s.wav", "stereo48k_slt.wav"]
    rerun = subprocess.run([sys.executable, str(ROOT / "slice_audio.py")], cwd=project.parent, env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and "10 pieces from earlier runs left as they are" in rerun.stdout
