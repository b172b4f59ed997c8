"""Bad input to inference_main.py / Svc is refused with its reason and exit status 1, before any work is
lost: too-short forced slices, empty or NaN audio, a malformed speaker map, out-of-range options, a full
disk while writing, and one unusable input among several."""
from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import yaml

import inference_main
from inference.infer_tool import InferOptions, Svc, SvcError
from modules.audio_io import AudioReadError
from test_infer_diffusion import _build_diffusion
from test_infer_tool import SR, build_workspace

MODEL = ["-m", "logs/44k/G_1.pth", "-c", "logs/44k/config.json"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, single_thread) -> Path:
    root = build_workspace(tmp_path_factory.mktemp("faults"))
    short = sf.read(root / "raw/short.wav", dtype="float32")[0]
    sf.write(root / "raw/a.wav", short[:SR], SR, subtype="PCM_16")
    sf.write(root / "raw/empty.wav", np.zeros(0, np.float32), SR, subtype="PCM_16")
    broken = short[:SR].copy()
    broken[SR // 2:SR // 2 + 100] = np.nan
    sf.write(root / "raw/nan.wav", broken, SR, subtype="FLOAT")
    (root / "raw/junk.wav").write_bytes(b"RIFF\x10\x00\x00\x00not audio at all")
    return root


@pytest.fixture
def cli(ws: Path, monkeypatch, caplog):
    monkeypatch.chdir(ws)
    caplog.set_level(logging.INFO)
    for old in (ws / "results").glob("*"):
        old.unlink()
    return lambda *args: inference_main.main(list(args))


@pytest.fixture(scope="module")
def svc(ws: Path) -> Svc:
    return Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", cluster_model_path="",
               pretrain_dir=ws / "pretrain")


def _results(ws: Path) -> list[str]:
    return sorted(p.name for p in (ws / "results").glob("*")) if (ws / "results").is_dir() else []


def test_forced_slices_shorter_than_four_frames_are_refused(cli, ws: Path, svc: Svc, capsys) -> None:
    with pytest.raises(SvcError, match=r"-cl\) must be 0 or at least 0\.046 s \(4 frames of 512 samples at "
                                       r"44100 Hz\), got 0\.0001 s"):
        svc.iter_slice_inference(ws / "raw/a.wav", "speaker0", InferOptions(clip_seconds=0.0001))
    assert cli(*MODEL, "-n", "a.wav", "-s", "speaker0", "-cl", "0.04") == 1
    assert "must be 0 or at least 0.046 s" in capsys.readouterr().err and _results(ws) == []
    assert "at least 4 model frames" in " ".join(inference_main.build_parser().format_help().split())
    assert len(svc.slice_inference(ws / "raw/a.wav", "speaker0", 0, clip_seconds=0.05)) == SR  # the minimum works


def test_a_wav_without_samples_is_refused(cli, ws: Path, capsys) -> None:
    assert cli(*MODEL, "-n", "empty.wav", "-s", "speaker0") == 1
    assert "error: raw/empty.wav: has no audio samples" in capsys.readouterr().err
    assert _results(ws) == []


def test_nan_input_is_blamed_on_the_input_not_the_model(cli, ws: Path, svc: Svc, capsys) -> None:
    assert cli(*MODEL, "-n", "nan.wav", "-s", "speaker0") == 1
    err = capsys.readouterr().err
    assert "raw/nan.wav: contains NaN or infinite samples (at 0.50 s)" in err and "broken" not in err
    assert _results(ws) == []
    with pytest.raises(AudioReadError, match="nan.wav: contains NaN"):  # 4.1's one-piece API
        svc.infer("speaker0", 0, ws / "raw/nan.wav")
    samples = np.full(SR, np.inf, np.float32)
    with pytest.raises(AudioReadError, match="<audio>: contains NaN or infinite samples"):
        svc.slice_inference((samples, SR), "speaker0", 0)


@pytest.mark.parametrize("args, message", [
    (["-t", "10000"], "transposition (-t) must be between -53 and 53 semitones (beyond, every pitch leaves the "
                      "model's 50-1100 Hz), got 10000"),
    (["-t", "0", "-54"], "transposition (-t) must be between -53 and 53 semitones"),
    (["-ft", "-3"], "F0 filter threshold (-ft) must be between 0 and 1, got -3"),
])
def test_options_out_of_range_name_their_range(cli, ws: Path, capsys, args: list[str], message: str) -> None:
    assert cli(*MODEL, "-n", "a.wav", "a.wav", "-s", "speaker0", *args) == 1
    err = capsys.readouterr().err
    assert message in err and "NaN" not in err
    assert _results(ws) == []  # refused before converting the first input


def test_speaker_list_instead_of_map_gets_the_config_message(cli, ws: Path, tmp_path: Path, capsys) -> None:
    config = json.loads((ws / "logs/44k/config.json").read_text())
    config["spk"] = ["speaker0", "speaker1", "speaker2"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert cli("-m", "logs/44k/G_1.pth", "-c", str(tmp_path / "config.json"), "-n", "a.wav", "-s", "speaker0") == 1
    assert "spk must be an object mapping speaker names to integer ids" in capsys.readouterr().err
    _build_diffusion(ws)
    diff = yaml.safe_load((ws / "logs/44k/diffusion/config.yaml").read_text())
    diff["spk"] = ["speaker0", "speaker1"]
    (tmp_path / "diffusion.yaml").write_text(yaml.safe_dump(diff))
    for mode in ("-od", "-shd"):
        assert cli(*MODEL, "-n", "a.wav", "-s", "speaker0", mode, "-dc", str(tmp_path / "diffusion.yaml")) == 1
        err = capsys.readouterr().err
        assert "diffusion.yaml: spk must be an object mapping speaker names to integer ids" in err, mode
        assert "Traceback" not in err


def _check_full_disk(cli, ws: Path, capsys) -> None:
    assert cli(*MODEL, "-n", "a.wav", "-s", "speaker0") == 1
    err = capsys.readouterr().err
    assert "error: the disk of results is full: writing a.wav_0key_speaker0_sovits_pm.flac stopped after" in err
    assert _results(ws) == []  # neither the result nor its .part file


def test_full_disk_errno_while_writing_says_so(cli, ws: Path, monkeypatch, capsys) -> None:
    real = sf.SoundFile.write

    def write(self, data):
        if not str(self.name).endswith(".part"):  # the in-memory WAV of each piece
            return real(self, data)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sf.SoundFile, "write", write)
    _check_full_disk(cli, ws, capsys)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_reported_by_libsndfile_says_so(cli, ws: Path, monkeypatch, capsys) -> None:
    import core.atomic

    # libsndfile reports a failed write without errno; a disk with no free space identifies it.
    (ws / "results").mkdir(exist_ok=True)
    os.symlink("/dev/full", ws / "results/a.wav_0key_speaker0_sovits_pm.flac.part")
    monkeypatch.setattr(core.atomic.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    _check_full_disk(cli, ws, capsys)


def test_one_unreadable_input_does_not_stop_the_others(cli, ws: Path, capsys) -> None:
    assert cli(*MODEL, "-n", "junk.wav", "a.wav", "empty.wav", "-s", "speaker0") == 1
    assert _results(ws) == ["a.wav_0key_speaker0_sovits_pm.flac"]
    err = capsys.readouterr().err
    assert "raw/junk.wav: not a readable audio file" in err and "raw/empty.wav: has no audio samples" in err
    assert "error: 2 of 3 inputs failed (raw/junk.wav, raw/empty.wav); 1 converted" in err
