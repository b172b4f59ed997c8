"""preprocess_hubert_f0.py end to end on shared voices, with tiny encoder / vocoder files in pretrain/.

The chain is the tutorial's: resample.py -> preprocess_flist_config.py -> preprocess_hubert_f0.py,
run through each script's ``main`` inside a temporary project folder.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import preprocess_flist_config
import preprocess_hubert_f0
import resample
from conftest import DATA, FIXTURES, VENCODER_FIXTURES
from modules.checkpoint import safe_torch_load
from modules.npy_io import load_f0, load_npy

SPEAKERS = {"kal": ["kal_01.wav", "kal_02.wav", "kal_03.wav"], "slt": ["slt_01.wav", "slt_02.wav", "slt_03.wav"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not (VENCODER_FIXTURES / "contentvec_reduced.pt").exists():
        pytest.skip("vencoder fixtures not available")
    root = tmp_path_factory.mktemp("project")
    for speaker, names in SPEAKERS.items():
        (root / "dataset_raw" / speaker).mkdir(parents=True)
        for name in names:
            src = DATA / "voices" / speaker / name
            if not src.exists():
                pytest.skip(f"{src} not available")
            shutil.copy(src, root / "dataset_raw" / speaker / name)
    (root / "pretrain" / "nsf_hifigan").mkdir(parents=True)
    shutil.copy(VENCODER_FIXTURES / "contentvec_reduced.pt", root / "pretrain" / "checkpoint_best_legacy_500.pt")
    for name in ("config.json", "model"):
        shutil.copy(FIXTURES / "nsf_hifigan" / "model_dir" / name, root / "pretrain" / "nsf_hifigan" / name)
    return root


@pytest.fixture(scope="module")
def prepared(project, tmp_path_factory):
    """Run the three tutorial steps once (cwd = project)."""
    mp = pytest.MonkeyPatch()
    mp.chdir(project)
    torch.set_num_threads(1)
    try:
        assert resample.main(["--num_processes", "1"]) == 0
        assert preprocess_flist_config.main(["--speech_encoder", "vec768l12", "--vol_aug", "--seed", "1"]) == 0
        assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--use_diff", "--device", "cpu"]) == 0
    finally:
        mp.undo()
    return project


def _clips(root):
    return sorted((root / "dataset" / "44k").glob("*/*.wav"))


def test_every_clip_has_its_features(prepared) -> None:
    clips = _clips(prepared)
    assert len(clips) == 6
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
    assert "1 clips processed, 5 already up to date, 0 failed" in caplog.text
    assert safe_torch_load(f"{clip}.soft.pt").shape[1] == 48
    for path, mtime in before.items():
        if not path.name.endswith(".soft.pt"):
            assert path.stat().st_mtime_ns == mtime, path


def test_config_written_by_flist_step(prepared) -> None:
    cfg = json.loads((prepared / "configs" / "config.json").read_text())
    assert cfg["spk"] == {"kal": 0, "slt": 1} and cfg["model"]["vol_embedding"] is True


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
            assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--device", "cpu"]) == 0
    finally:
        bad.unlink()
    assert "1 failed" in caplog.text and "broken.wav" in caplog.text
