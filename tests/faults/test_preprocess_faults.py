"""Lost-work and trust faults of the three preprocessing scripts: user config edits, stale and damaged feature
files, exit codes, a full disk, and kill -9 at random moments."""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import preprocess_flist_config
import preprocess_hubert_f0
import resample
from conftest import DATA, ROOT, PreparedProject
from core.features import FEATURE_SUFFIXES, FeatureError, feature_path, feature_problem, read_feature

HUBERT_ARGS = ["--f0_predictor", "dio", "--use_diff", "--device", "cpu"]
KINDS = (*FEATURE_SUFFIXES, "spec")
CHANNELS = {"units": 48, "spec": 1025, "mel": 128, "aug_mel": 128}  # tiny ContentVec, 2048-point STFT, vocoder


@pytest.fixture
def project(prepared_project: PreparedProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = prepared_project.copy_to(tmp_path / "project")
    monkeypatch.chdir(root)
    return root


def _clips(root: Path) -> list[Path]:
    return sorted((root / "dataset" / "44k").glob("*/*.wav"))


def _problems(root: Path) -> list[str]:
    """Every feature file of every clip that is not up to date, with the reason."""
    found = []
    for clip in _clips(root):
        for kind in KINDS:
            problem = feature_problem(clip, kind, sf.info(clip).frames, 512, 44100, CHANNELS.get(kind))
            if problem:
                found.append(f"{clip.name} {kind}: {problem}")
    return found


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- 1. user edits of the generated configs ---
def test_rerun_keeps_the_users_config_edits(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    flist_args = ["--speech_encoder", "vec768l12", "--vol_aug", "--seed", "1"]
    config = json.loads(Path("configs/config.json").read_text())
    config["train"].update(batch_size=3, epochs=77)
    config["model"]["hidden_channels"] = 96
    config["model"]["n_speakers"] = 10
    config["mine"] = {"note": "kept"}
    Path("configs/config.json").write_text(json.dumps(config))
    diffusion = yaml.safe_load(Path("configs/diffusion.yaml").read_text())
    diffusion["train"]["batch_size"] = 5
    Path("configs/diffusion.yaml").write_text(yaml.safe_dump(diffusion))

    with caplog.at_level("INFO"):
        assert preprocess_flist_config.main(flist_args) == 0
    again = json.loads(Path("configs/config.json").read_text())
    kept = (again["train"]["batch_size"], again["train"]["epochs"], again["model"]["hidden_channels"])
    assert kept == (3, 77, 96)
    assert again["mine"] == {"note": "kept"}
    assert again["model"]["n_speakers"] == 3 and again["spk"] == {"kal": 0, "lj": 1, "slt": 2}  # set by the step
    assert yaml.safe_load(Path("configs/diffusion.yaml").read_text())["train"]["batch_size"] == 5
    err = caplog.text
    assert "Kept your values in configs/config.json" in err and "train.batch_size=3" in err
    assert "model.hidden_channels=96" in err and "--overwrite_config" in err
    assert "model.n_speakers=3 (was 10, set by this step)" in err
    assert "Kept your values in configs/diffusion.yaml" in err and "train.batch_size=5" in err

    assert preprocess_flist_config.main([*flist_args, "--overwrite_config"]) == 0
    template = json.loads((ROOT / "configs_template" / "config_template.json").read_text())
    restored = json.loads(Path("configs/config.json").read_text())
    assert restored["train"]["batch_size"] == template["train"]["batch_size"] and "mine" not in restored
    assert restored["spk"] == {"kal": 0, "lj": 1, "slt": 2}


def test_unreadable_config_is_not_overwritten(project: Path, capsys: pytest.CaptureFixture) -> None:
    Path("configs/config.json").write_text('{"train": {"batch_size": 3,}')  # a typo while editing
    assert preprocess_flist_config.main(["--seed", "1"]) == 1
    assert "--overwrite_config" in capsys.readouterr().err
    assert Path("configs/config.json").read_text() == '{"train": {"batch_size": 3,}'


# --- 2. stale and damaged feature files ---
def test_changed_clip_gets_new_features(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = project / "dataset_raw" / "kal" / "kal_01.wav"
    shutil.copy(DATA / "voices" / "slt" / "slt_04.wav", raw)  # the user replaces a clip
    assert resample.main(["--num_processes", "1"]) == 1  # the corrupt clip is still skipped
    with caplog.at_level("INFO"):
        assert preprocess_hubert_f0.main(HUBERT_ARGS) == 0
    assert "1 clips processed" in caplog.text and "kal_01.wav" in caplog.text
    assert _problems(project) == []


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_feature_file_is_recomputed(project: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    clip = _clips(project)[0]
    target = Path(feature_path(clip, kind))
    _truncate(target)
    with pytest.raises(FeatureError, match=f"{target.name} is unreadable"):
        read_feature(clip, kind)
    with caplog.at_level("INFO"):
        assert preprocess_hubert_f0.main(HUBERT_ARGS) == 0
    assert f"{target.relative_to(project)} is unreadable" in caplog.text and "recomputing" in caplog.text
    assert "1 clips processed" in caplog.text
    assert _problems(project) == []


def test_feature_of_another_length_is_recomputed(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    clips = _clips(project)
    shutil.copy(feature_path(clips[1], "f0"), feature_path(clips[0], "f0"))  # same shape, other clip
    with caplog.at_level("INFO"):
        assert preprocess_hubert_f0.main(HUBERT_ARGS) == 0
    assert "stale file of another clip" in caplog.text and "1 clips processed" in caplog.text
    assert _problems(project) == []


def test_training_loader_names_an_unreadable_feature_file(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    from core.config import HParams
    from data_utils import TextAudioSpeakerLoader

    clips = [str(p.relative_to(project)) for p in _clips(project) if p.parent.name == "slt"][:2]
    Path("filelists/two.txt").write_text("".join(f"./{c}\n" for c in clips), encoding="utf-8")
    config = json.loads(Path("configs/config.json").read_text())
    config["model"]["ssl_dim"] = 48  # the tiny encoder of the prepared project
    _truncate(Path(feature_path(clips[0], "units")))
    _truncate(Path(feature_path(clips[1], "f0")))
    with caplog.at_level("WARNING"):
        loader = TextAudioSpeakerLoader("filelists/two.txt", HParams(config, source="config.json"))
        assert [loader[i] for i in range(len(loader))] == [None, None]
    assert f"{clips[0]}.soft.pt is unreadable" in caplog.text
    assert f"{clips[1]}.f0.npy is unreadable" in caplog.text


# --- 3, 4. exit codes and a full disk ---
def _full_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Make the disk fill up at the `writes`-th file write (counting from 0)."""
    import core.atomic

    real, count = core.atomic.os.fsync, [0]

    def fsync(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            count[0] += 1
            if count[0] > writes:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(core.atomic.os, "fsync", fsync)


@pytest.mark.parametrize("script", ["resample", "preprocess_flist_config", "preprocess_hubert_f0"])
def test_full_disk_says_so_and_a_rerun_finishes(project: Path, script: str, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    args = {"resample": ["--num_processes", "1", "--overwrite"], "preprocess_flist_config": ["--seed", "1"],
            "preprocess_hubert_f0": [*HUBERT_ARGS, "--overwrite"]}[script]
    main = {"resample": resample.main, "preprocess_flist_config": preprocess_flist_config.main,
            "preprocess_hubert_f0": preprocess_hubert_f0.main}[script]
    with monkeypatch.context() as patch:
        _full_after(patch, 3)
        assert main(args) == 1
    out = capsys.readouterr()
    assert "is full" in out.err and "Free some space" in out.err and "Traceback" not in out.out + out.err
    assert _temps(project) == []
    assert main([a for a in args if a != "--overwrite"]) == (1 if script == "resample" else 0)
    assert _temps(project) == []
    if script == "resample":
        assert len([sf.info(clip) for clip in _clips(project)]) == 9
    elif script == "preprocess_flist_config":
        assert json.loads(Path("configs/config.json").read_text())["spk"] == {"kal": 0, "lj": 1, "slt": 2}
        assert len(Path("filelists/train.txt").read_text().split()) == 3
    else:
        assert _problems(project) == []


def test_skipped_clips_make_every_script_exit_1(project: Path) -> None:
    (project / "dataset" / "44k" / "kal" / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav")
    assert preprocess_hubert_f0.main(HUBERT_ARGS) == 1
    os.remove(project / "dataset" / "44k" / "kal" / "broken.wav")
    shutil.copy(_clips(project)[0], project / "dataset" / "44k" / "kal" / "a|b.wav")
    assert preprocess_flist_config.main(["--seed", "1"]) == 1
    assert resample.main(["--num_processes", "1"]) == 1  # dataset_raw/kal/corrupt.wav


# --- 5. kill -9 ---
@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_only_valid_features(project: Path) -> None:
    """preprocess_hubert_f0.py is killed at random moments and rerun; every feature file on disk is always
    complete, and the final run leaves every clip up to date and no temp file."""
    for clip in _clips(project):
        for kind in KINDS:
            os.remove(feature_path(clip, kind))
    rng = random.Random(11)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "preprocess_hubert_f0.py"), *HUBERT_ARGS]
    for _trial in range(3):
        before = len(list(project.rglob("*.npy")))
        proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(list(project.rglob("*.npy"))) <= before:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        for clip in _clips(project):
            for kind in KINDS:
                if os.path.exists(feature_path(clip, kind)):
                    read_feature(clip, kind, sf.info(clip).frames, 512, 44100, CHANNELS.get(kind))
    # What a kill during a write leaves behind, whether or not one of the kills above hit a write.
    (_clips(project)[0].parent / f".{_clips(project)[0].name}.f0.npy.x1y2z3.tmp").write_bytes(b"\x93NUMPY")
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _problems(project) == [] and _temps(project) == []
    assert "Traceback" not in result.stdout + result.stderr
