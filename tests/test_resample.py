"""resample.py / prep/resample.py / modules/audio_io.py on shared data clips and generated edge cases.

The reference for every written file is an independent run of 4.1's chain through librosa (decode
with soundfile and average channels as librosa.load(sr=None) does, effects.trim(top_db=40), peak
guard, librosa.resample, peak normalisation, int16 cast): our output must match it sample for sample
(pipeline.md §1). librosa.load itself is avoided only because its first call takes ~10 s.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import resample as resample_script
from conftest import DATA
from modules.audio_io import AudioReadError, read_audio_mono, resample_audio, write_wav_int16
from prep.resample import (
    ClipJob,
    default_workers,
    format_summary,
    list_jobs,
    prepare_clip,
    resample_dataset,
    resample_file,
    to_int16,
    trim_silence,
)

librosa = pytest.importorskip("librosa")
NON_ASCII = "こんにちは_テスト.wav"


def reference_int16(path: Path, target_sr: int = 44100, loudnorm: bool = True) -> np.ndarray:
    """4.1's resample.py chain, expressed with librosa calls (the float result before the cast)."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    y = np.mean(data.T, axis=0)  # librosa.to_mono
    y, _ = librosa.effects.trim(y, top_db=40)
    peak = np.abs(y).max()
    if peak > 1.0:
        y = 0.98 * y / peak
    y = librosa.resample(y, orig_sr=sr, target_sr=target_sr)
    if loudnorm:
        y = y / np.max(np.abs(y))
    return y * np.iinfo(np.int16).max


def square_wave(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return np.where(np.sin(2 * np.pi * freq * t) >= 0, 1.0, -1.0).astype(np.float32)


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    """dataset_raw/ with shared clips and generated edge cases (see the comments per file)."""
    root = tmp_path_factory.mktemp("raw") / "dataset_raw"
    slt, kal, odd = root / "slt", root / "kal", root / "edge"
    for d in (slt, kal, odd, root / ".hidden_speaker"):
        d.mkdir(parents=True)
    shutil.copy(DATA / "voices/slt/slt_01.wav", slt)
    shutil.copy(DATA / "voices/kal/kal_01.wav", kal)
    shutil.copy(DATA / "edge" / NON_ASCII, kal)  # non-ASCII name
    shutil.copy(DATA / "edge/stereo48k_slt.wav", odd)  # stereo 48 kHz int16
    shutil.copy(DATA / "voices/slt/slt_02.wav", root / ".hidden_speaker")
    shutil.copy(DATA / "voices/slt/slt_03.wav", slt / ".hidden.wav")
    (root / "config.json").write_text("{}")  # tutorial's optional file: not a speaker
    rng = np.random.default_rng(0)
    # Stereo float 48 kHz with 0.5 s of digital silence at both ends and a peak above 1 (peak guard).
    tone = 1.6 * np.sin(2 * np.pi * 330 * np.arange(48000) / 48000).astype(np.float32)
    tone += 0.01 * rng.standard_normal(48000).astype(np.float32)
    pad = np.zeros(24000, np.float32)
    left = np.concatenate([pad, tone, pad])
    sf.write(odd / "float48k.wav", np.stack([left, 0.5 * left], 1), 48000, subtype="FLOAT")
    # Unsigned 8-bit, 22.05 kHz.
    sf.write(odd / "u8_22k.wav", 0.5 * np.sin(np.arange(22050) / 7.0), 22050, subtype="PCM_U8")
    # FLAC at 32 kHz: decoded too and renamed to .wav.
    sf.write(odd / "clip.flac", 0.3 * rng.standard_normal(16000), 32000, subtype="PCM_16")
    (odd / "empty.wav").write_bytes(b"")
    (odd / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(40))
    sf.write(odd / "silent.wav", np.zeros(44100, np.int16), 44100, subtype="PCM_16")
    sf.write(odd / "header_only.wav", np.zeros(0, np.int16), 44100, subtype="PCM_16")
    (odd / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def first_run(raw_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "44k"
    code = resample_script.main(["--in_dir", str(raw_root), "--out_dir2", str(out), "--num_processes", "1"])
    return out, code


EXPECTED = {
    "slt/slt_01.wav": DATA / "voices/slt/slt_01.wav",
    "kal/kal_01.wav": DATA / "voices/kal/kal_01.wav",
    f"kal/{NON_ASCII}": DATA / "edge" / NON_ASCII,
    "edge/stereo48k_slt.wav": DATA / "edge/stereo48k_slt.wav",
    "edge/float48k.wav": "edge/float48k.wav",
    "edge/u8_22k.wav": "edge/u8_22k.wav",
    "edge/clip.wav": "edge/clip.flac",
}


def test_outputs_match_the_41_chain(first_run, raw_root):
    out, code = first_run
    assert code == 1  # the bad inputs are skipped: the run reports failure after finishing the rest
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(EXPECTED)
    for rel, src in EXPECTED.items():
        src = Path(src) if Path(src).is_absolute() else raw_root / src
        info = sf.info(out / rel)
        assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, 44100)
        got, _ = sf.read(out / rel, dtype="int16")
        ref = reference_int16(src)
        assert len(got) == len(ref), rel
        np.testing.assert_array_equal(got, ref.astype(np.int16), err_msg=rel)
        assert np.abs(got.astype(np.int32)).max() == 32767  # peak-normalised to full scale


def test_trimming_and_lengths(first_run, raw_root):
    out, _ = first_run
    # float48k: 0.5 s of silence each side -> trimmed to whole 512-sample frames around 1 s of tone.
    got, _ = sf.read(out / "edge/float48k.wav", dtype="int16")
    x, sr = read_audio_mono(raw_root / "edge/float48k.wav")
    kept = trim_silence(x)
    assert 48000 <= len(kept) <= 48000 + 2 * 2048
    assert len(got) == int(np.ceil(len(kept) * 44100 / 48000))
    # The shared clips carry 0.2 s + 0.3 s of -75 dBFS padding; at least that is cut off, in 512-sample
    # frames (the clip is 44.1 kHz already, so the output length is the trimmed length).
    raw = sf.info(DATA / "voices/slt/slt_01.wav").frames
    got, _ = sf.read(out / "slt/slt_01.wav", dtype="int16")
    assert 0.7 * raw < len(got) <= raw - 0.5 * 44100 + 2 * 512


def test_summary_reports_every_bad_file(first_run, raw_root, capsys):
    out = first_run[0].parent / "again"
    code = resample_script.main(["--in_dir", str(raw_root), "--out_dir2", str(out), "--num_processes", "1"])
    text = capsys.readouterr().out
    assert code == 1
    lines = text.splitlines()
    assert lines[0] == f"CPU count: {os.cpu_count()}"
    assert [ln for ln in lines if ln.startswith(str(raw_root))] == [
        os.path.join(str(raw_root), s) for s in ("edge", "kal", "slt")
    ]
    assert "Done: 7 written, 0 already up to date (not redone), 4 skipped because of problems" in text
    reasons = {Path(ln.split(": ")[0].strip()).name: ln.split(": ", 1)[1] for ln in lines if ln.startswith("  ")}
    assert reasons["empty.wav"] == "empty file (0 bytes)"
    assert reasons["corrupt.wav"].startswith("not a readable audio file")
    assert reasons["silent.wav"] == "silent after trimming; skipped"
    assert reasons["header_only.wav"] == "contains no audio samples"
    assert not (out / "edge/silent.wav").exists() and not (out / ".hidden_speaker").exists()
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no temp files, no hidden inputs


def test_rerun_skips_finished_files(first_run, raw_root, capsys):
    out, _ = first_run
    target = out / "slt/slt_01.wav"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    assert resample_script.main(["--in_dir", str(raw_root), "--out_dir2", str(out), "--num_processes", "1"]) == 1
    assert "Done: 0 written, 7 already up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before
    # A source newer than its output is redone; --overwrite redoes everything.
    later = time.time() + 5
    os.utime(raw_root / "slt/slt_01.wav", (later, later))
    try:
        assert resample_script.main(["--in_dir", str(raw_root), "--out_dir2", str(out), "--num_processes", "1"]) == 1
        assert "Done: 1 written, 6 already up to date" in capsys.readouterr().out
        assert target.stat().st_mtime_ns != before[target]
    finally:
        os.utime(raw_root / "slt/slt_01.wav", None)
    assert resample_script.main(["--in_dir", str(raw_root), "--out_dir2", str(out), "--num_proc", "1", "--overwrite"]) == 1
    assert "Done: 7 written, 0 already up to date" in capsys.readouterr().out


def test_skip_loudnorm_clips_instead_of_wrapping(tmp_path):
    raw = tmp_path / "raw/spk"
    raw.mkdir(parents=True)
    # A full-scale square wave overshoots by ~9 % when band-limited (Gibbs): beyond int16 after resampling.
    sf.write(raw / "square.wav", square_wave(48000, 0.5), 48000, subtype="FLOAT")
    out = tmp_path / "out"
    assert resample_script.main(["--in_dir", str(tmp_path / "raw"), "--out_dir2", str(out), "--skip",
                                 "--num_processes", "1"]) == 0
    got, _ = sf.read(out / "spk/square.wav", dtype="int16")
    ref = reference_int16(raw / "square.wav", loudnorm=False)
    assert ref.max() > 32767 * 1.05 and ref.min() < -32768 * 1.05
    over, under = ref > 32767, ref < -32768
    assert np.all(got[over] == 32767) and np.all(got[under] == -32768)
    inside = ~(over | under)
    np.testing.assert_array_equal(got[inside], ref[inside].astype(np.int16))


def test_worker_pool_gives_the_same_files(raw_root, first_run, tmp_path):
    out = tmp_path / "pool"
    summary = resample_dataset(raw_root, out, workers=2, progress=False)
    assert summary.workers == 2
    assert summary.count("written") == 7 and len(summary.failed) == 4
    for rel in EXPECTED:
        assert (out / rel).read_bytes() == (first_run[0] / rel).read_bytes(), rel


def test_missing_input_folder(tmp_path, capsys):
    assert resample_script.main(["--in_dir", str(tmp_path / "nope"), "--out_dir2", str(tmp_path / "o")]) == 1
    assert "nope not found" in capsys.readouterr().err


def test_cli_defaults_are_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("dataset_raw/spk").mkdir(parents=True)
    shutil.copy(DATA / "voices/lj/lj_01.wav", "dataset_raw/spk/a.wav")
    assert resample_script.main(["--num_processes", "1"]) == 0
    assert sf.info("dataset/44k/spk/a.wav").samplerate == 44100
    with pytest.raises(SystemExit) as exc:
        resample_script.main(["--bogus"])
    assert exc.value.code == 2


def test_to_int16_truncates_toward_zero():
    x = np.array([0.5, -0.5, 1.0, -1.0, 0.99999, 1.2, -1.2], np.float32)
    np.testing.assert_array_equal(to_int16(x[:5], clip=False), [16383, -16383, 32767, -32767, 32766])
    np.testing.assert_array_equal(to_int16(x, clip=True)[5:], [32767, -32768])


def test_trim_matches_librosa():
    rng = np.random.default_rng(3)
    x = np.concatenate([1e-4 * rng.standard_normal(5000), rng.standard_normal(20000),
                        1e-4 * rng.standard_normal(7000)]).astype(np.float32)
    # A fade-in and fade-out of 0.25 dB per 512 samples: the -40 dB boundary falls on exact frames.
    fade_db = np.concatenate([np.linspace(-60, 0, 240 * 512), np.linspace(0, -60, 240 * 512)])
    faded = (rng.standard_normal(len(fade_db)) * 10 ** (fade_db / 20)).astype(np.float32)
    for signal in (x, faded, x[:1000], np.zeros(3000, np.float32), np.ones(10, np.float32)):
        ref, (start, end) = librosa.effects.trim(signal, top_db=40)
        got = trim_silence(signal)
        assert len(got) == len(ref)
        np.testing.assert_array_equal(got, signal[start:end])
    assert len(trim_silence(np.zeros(3000, np.float32))) == 3000  # all-zero: nothing cut


def test_resample_audio_equals_librosa_default():
    x = np.random.default_rng(1).standard_normal(12345).astype(np.float32)
    for sr in (8000, 16000, 22050, 32000, 48000, 96000):
        got = resample_audio(x, sr, 44100)
        np.testing.assert_array_equal(got, librosa.resample(x, orig_sr=sr, target_sr=44100))
    assert resample_audio(x, 44100, 44100) is x


def test_prepare_clip_rejects_silence():
    with pytest.raises(AudioReadError, match="silent after trimming"):
        prepare_clip(np.zeros(5000, np.float32), 44100, 44100, loudnorm=True)
    with pytest.raises(AudioReadError, match="silent"):  # one-LSB dither is silence too
        prepare_clip(np.full(5000, 1 / 32768, np.float32), 44100, 44100, loudnorm=False)


def test_audio_io_round_trip_and_errors(tmp_path):
    pcm = np.array([0, 1, -1, 32767, -32768], np.int16)
    write_wav_int16(tmp_path / "a.wav", pcm, 16000)
    data = (tmp_path / "a.wav").read_bytes()
    assert len(data) == 44 + 2 * len(pcm)  # canonical header, like scipy.io.wavfile
    x, sr = read_audio_mono(tmp_path / "a.wav")
    assert sr == 16000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, pcm / 32768.0)
    with pytest.raises(FileNotFoundError):
        read_audio_mono(tmp_path / "missing.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="NaN"):
        read_audio_mono(tmp_path / "nan.wav")
    with pytest.raises(ValueError):
        write_wav_int16(tmp_path / "b.wav", pcm.astype(np.int32), 16000)


def test_job_listing_rules(raw_root, tmp_path):
    speakers, conflicts = list_jobs(raw_root, tmp_path)
    assert [s for s, _ in speakers] == ["edge", "kal", "slt"]  # sorted; hidden folder and file skipped
    names = {s: [os.path.basename(j.src) for j in jobs] for s, jobs in speakers}
    assert names["slt"] == ["slt_01.wav"] and "notes.txt" not in names["edge"]
    assert conflicts == []
    (raw_root / "edge/u8_22k.flac").write_bytes(b"")  # would overwrite u8_22k.wav's output
    try:
        speakers, conflicts = list_jobs(raw_root, tmp_path)
    finally:
        (raw_root / "edge/u8_22k.flac").unlink()
    assert [os.path.basename(c.job.src) for c in conflicts] == ["u8_22k.flac"]
    assert "already made from u8_22k.wav" in format_summary_of(conflicts)


def format_summary_of(outcomes) -> str:
    from prep.resample import ResampleSummary

    return format_summary(ResampleSummary(outcomes=list(outcomes)))


def test_default_worker_rule():
    assert [default_workers(n) for n in (1, 2, 4, 5, 8, 60, 61, 128)] == [1, 1, 1, 3, 6, 58, 30, 30]


def test_resample_file_reports_instead_of_raising(tmp_path):
    job = ClipJob("s", str(tmp_path / "gone.wav"), str(tmp_path / "o/gone.wav"))
    outcome = resample_file(job, 44100, loudnorm=True)
    assert outcome.status == "failed" and "not found" in outcome.reason
