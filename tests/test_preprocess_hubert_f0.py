"""preprocess_hubert_f0.py end to end on shared voices, with tiny encoder / vocoder files in pretrain/.

The project is the session's tutorial-prepared one (conftest `prepared_project`), copied because some
tests change files; `test_second_run_does_nothing` runs the real command line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import preprocess_hubert_f0
from conftest import PROJECT_CLIPS, ROOT, VENCODER_FIXTURES, PreparedProject
from core.checkpoint import safe_torch_load
from core.features import feature_path, load_f0, load_npy

N_CLIPS = sum(len(names) for _, names in PROJECT_CLIPS.values())


@pytest.fixture(scope="module")
def prepared(prepared_project: PreparedProject, tmp_path_factory: pytest.TempPathFactory):
    return prepared_project.copy_to(tmp_path_factory.mktemp("hubert_f0") / "project")


def _run(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """Run a top-level script the way a user does: ``python <repo>/<script> ...`` inside the project."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=600)


def test_resample_reported_the_corrupt_file(prepared_project: PreparedProject, prepared) -> None:
    assert "corrupt.wav" in prepared_project.logs["resample"]
    assert not (prepared / "dataset" / "44k" / "kal" / "corrupt.wav").exists()


def test_second_run_does_nothing(prepared) -> None:
    clips = _clips(prepared)
    stamps = {p: p.stat().st_mtime_ns for c in clips for p in c.parent.glob(c.name + ".*")}
    done = _run("preprocess_hubert_f0.py", "--f0_predictor", "dio", "--use_diff", "--device", "cpu", cwd=prepared)
    assert done.returncode == 0, done.stderr
    assert f"0 clips processed, {N_CLIPS} already up to date, 0 failed" in done.stdout + done.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def _clips(root):
    return sorted((root / "dataset" / "44k").glob("*/*.wav"))


def test_every_clip_has_its_features(prepared) -> None:
    clips = _clips(prepared)
    assert len(clips) == N_CLIPS
    assert any(c.name == "こんにちは_テスト.wav" for c in clips)
    assert any(c.name == "stereo48k_slt.wav" for c in clips)
    for clip in clips:
        frames = sf.info(clip).frames // 512
        units = safe_torch_load(f"{clip}.soft.pt")
        assert units.dtype == torch.float32 and units.shape[:2] == (1, 48)
        n16 = int(np.ceil(sf.info(clip).frames * 16000 / 44100))
        assert units.shape[2] == (n16 - 400) // 320 + 1
        f0, uv = load_f0(f"{clip}.f0.npy")
        assert f0.shape == uv.shape == (frames,)
        assert set(np.unique(uv)) <= {0.0, 1.0} and uv.sum() > frames // 4
        assert np.all(f0[uv > 0] > 50) and np.all(f0 < 1100)
        # 4.1 reads the file with allow_pickle and unpacks two rows: a plain (2, T) array works.
        plain = np.load(f"{clip}.f0.npy", allow_pickle=False)
        assert plain.shape == (2, frames) and plain.dtype == np.float64
        spec = safe_torch_load(clip.with_name(clip.name[:-4] + ".spec.pt"))
        assert spec.shape == (1025, frames)
        assert load_npy(f"{clip}.vol.npy").shape == (frames,)
        mel = load_npy(f"{clip}.mel.npy")
        assert mel.shape == (frames, 128) and mel.dtype == np.float32
        aug = load_npy(f"{clip}.aug_mel.npy")
        assert aug.dtype == object and aug[0].shape == (frames, 128) and -5 <= aug[1] <= 5
        assert load_npy(f"{clip}.aug_vol.npy").shape == (frames,)


def test_spec_matches_mel_processing(prepared) -> None:
    from modules.mel_processing import spectrogram_torch

    clip = _clips(prepared)[0]
    audio, _ = sf.read(clip, dtype="int16")
    y = torch.from_numpy(audio.astype(np.float32) / 32768.0).unsqueeze(0)
    expected = spectrogram_torch(y, 2048, 44100, 512, 2048).squeeze(0)
    spec = safe_torch_load(clip.with_name(clip.name[:-4] + ".spec.pt"))
    assert torch.allclose(spec, expected, atol=1e-6)


def test_rerun_skips_and_stale_units_are_recomputed(prepared, monkeypatch, caplog) -> None:
    monkeypatch.chdir(prepared)
    clip = _clips(prepared)[0]
    before = {p: p.stat().st_mtime_ns for p in clip.parent.glob(clip.name + ".*")}
    torch.save(torch.zeros(1, 256, 10), f"{clip}.soft.pt")  # as left by another encoder
    with caplog.at_level("INFO"):
        assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--use_diff", "--device", "cpu"]) == 0
    assert "made by another encoder" in caplog.text
    assert f"1 clips processed, {N_CLIPS - 1} already up to date, 0 failed" in caplog.text
    assert safe_torch_load(f"{clip}.soft.pt").shape[1] == 48
    for path, mtime in before.items():
        if not path.name.endswith(".soft.pt"):
            assert path.stat().st_mtime_ns == mtime, path


def test_config_written_by_flist_step(prepared) -> None:
    cfg = json.loads((prepared / "configs" / "config.json").read_text())
    assert cfg["spk"] == {"kal": 0, "lj": 1, "slt": 2} and cfg["model"]["vol_embedding"] is True


def test_unusable_device_is_a_clear_error(prepared, monkeypatch, capsys) -> None:
    monkeypatch.chdir(prepared)
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--device", "cuda:99"]) == 1
    assert "error: device cuda:99 cannot be used: " in capsys.readouterr().err
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--device", "gpu"]) == 1
    assert "error: unknown device 'gpu'; use cpu, cuda or cuda:N" in capsys.readouterr().err


def test_missing_encoder_file_is_a_clear_error(prepared, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(prepared)
    shutil.move(prepared / "pretrain" / "checkpoint_best_legacy_500.pt", tmp_path / "cv.pt")
    try:
        assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--overwrite", "--device", "cpu"]) == 1
    finally:
        shutil.move(tmp_path / "cv.pt", prepared / "pretrain" / "checkpoint_best_legacy_500.pt")
    err = capsys.readouterr().err
    assert "checkpoint_best_legacy_500.pt" in err and "vec768l12" in err


def test_unreadable_clip_is_reported_and_skipped(prepared, monkeypatch, caplog) -> None:
    monkeypatch.chdir(prepared)
    bad = prepared / "dataset" / "44k" / "kal" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wav")
    try:
        with caplog.at_level("INFO"):
            assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--device", "cpu"]) == 1
    finally:
        bad.unlink()
    assert "1 failed" in caplog.text and "broken.wav" in caplog.text


def test_encoder_giving_nan_is_reported(prepared, tmp_path, monkeypatch, caplog) -> None:
    project = tmp_path / "p"
    shutil.copytree(prepared / "configs", project / "configs")
    clip = _clips(prepared)[0]
    (project / "dataset" / "44k" / "kal").mkdir(parents=True)
    shutil.copy(clip, project / "dataset" / "44k" / "kal" / clip.name)
    from vencoder.fairseq_ckpt import load_fairseq_checkpoint

    ckpt = load_fairseq_checkpoint(VENCODER_FIXTURES / "contentvec_reduced.pt")
    ckpt["model"] = {k: v.clone() for k, v in ckpt["model"].items()}
    ckpt["model"]["encoder.layer_norm.weight"].fill_(float("nan"))  # a broken download
    (project / "pretrain").mkdir()
    torch.save({"cfg": ckpt["cfg"], "model": ckpt["model"]}, project / "pretrain" / "checkpoint_best_legacy_500.pt")
    monkeypatch.chdir(project)
    with caplog.at_level("INFO"):
        assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--device", "cpu"]) == 1
    assert "gave NaN/inf units" in caplog.text and "1 failed" in caplog.text
    assert not (project / "dataset" / "44k" / "kal" / f"{clip.name}.soft.pt").exists()


@pytest.mark.slow
def test_two_workers_write_the_same_files(prepared, tmp_path, monkeypatch, caplog) -> None:
    project = tmp_path / "two"
    for sub in ("configs", "pretrain", "dataset"):
        shutil.copytree(prepared / sub, project / sub)
    (project / "dataset" / "44k" / "kal" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    monkeypatch.chdir(project)
    with caplog.at_level("INFO"):
        assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--overwrite", "--device", "cpu",
                                          "--num_processes", "2"]) == 1
    n = len(_clips(prepared))
    assert f"{n} clips processed, 0 already up to date, 1 failed" in caplog.text and "broken.wav" in caplog.text
    # On a machine of 2 cores or fewer, the user hears why 2 workers will not be faster.
    assert (f"2 workers share {torch.get_num_threads()} torch thread(s)" in caplog.text) == \
        (torch.get_num_threads() <= 2)
    for clip in _clips(prepared):
        twin = project / clip.relative_to(prepared)
        for kind in ("units", "spec"):  # the workers run 1 thread each: sums may round differently
            torch.testing.assert_close(safe_torch_load(feature_path(twin, kind)),
                                       safe_torch_load(feature_path(clip, kind)), rtol=1e-5, atol=1e-5)
        for got, want in zip(load_f0(f"{twin}.f0.npy"), load_f0(f"{clip}.f0.npy")):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(load_npy(f"{twin}.vol.npy"), load_npy(f"{clip}.vol.npy"), rtol=1e-6, atol=1e-7)


def test_one_process_works_on_two_clips_at_a_time(prepared, tmp_path, monkeypatch, caplog) -> None:
    """With two or more torch threads on the CPU, one process converts two clips at once, each on half of the
    threads, with the same files as one clip at a time (SOVITS_PLAIN=1); pm (Praat) stays one at a time."""
    import threading

    from prep import features

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    lanes_seen: set[str] = set()
    process = features._process

    def spy(extractor, clip):
        lanes_seen.add(threading.current_thread().name)
        return process(extractor, clip)

    monkeypatch.setattr(features, "_process", spy)
    try:
        for name, f0, plain, lanes in (("lanes", "dio", "", 2), ("plain", "dio", "1", 1), ("pm", "pm", "", 1)):
            project = tmp_path / name
            for sub in ("configs", "pretrain", "dataset"):
                shutil.copytree(prepared / sub, project / sub)
            monkeypatch.chdir(project)
            monkeypatch.setenv("SOVITS_PLAIN", plain)
            lanes_seen.clear()
            assert preprocess_hubert_f0.main(["--f0_predictor", f0, "--overwrite", "--use_diff",
                                              "--device", "cpu"]) == 0
            assert len(lanes_seen) == lanes, (name, lanes_seen)
            assert torch.get_num_threads() == 2  # given back after the run
    finally:
        torch.set_num_threads(threads)
    for clip in _clips(prepared):
        got, want = (tmp_path / name / clip.relative_to(prepared) for name in ("lanes", "plain"))
        for kind in ("units", "spec"):
            torch.testing.assert_close(safe_torch_load(feature_path(got, kind)),
                                       safe_torch_load(feature_path(want, kind)), rtol=1e-5, atol=1e-5)
        for a, b in zip(load_f0(f"{got}.f0.npy"), load_f0(f"{want}.f0.npy")):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(load_npy(f"{got}.mel.npy"), load_npy(f"{want}.mel.npy"), rtol=1e-5, atol=1e-5)
