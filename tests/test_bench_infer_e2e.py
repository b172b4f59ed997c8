"""Smoke run of bench/infer_e2e.py: a tiny model and tiny ContentVec through the real `Svc.convert_file`;
the reported stage figures add up, and the output file is as long as the cropped input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from bench import infer_e2e, preprocess
from test_bench_preprocess import TINY_CONTENTVEC
from test_bench_synth_infer import TINY_MODEL


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    raw = json.loads(infer_e2e.DEFAULT_CONFIG.read_text())
    raw["model"] = {**TINY_MODEL, "ssl_dim": 32}  # the tiny ContentVec gives 32-dim units
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    return path


def test_main_smoke(tiny_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if not infer_e2e.CLIP.exists():
        pytest.skip("reference clip data/edge/long_slt_60s.wav not available")
    monkeypatch.setattr(preprocess, "CONTENTVEC_BASE", TINY_CONTENTVEC)
    report, looped = infer_e2e.main(["--seconds", "1.5,2.5", "--f0_predictor", "pm", "--threads", "1",
                                     "--config", str(tiny_config)])
    assert report.audio_s == pytest.approx(1.5, abs=1 / 44100)
    assert report.samples_written == round(1.5 * 44100)  # the song loop keeps the input length
    # every stage of a plain conversion was timed, and took time
    assert set(infer_e2e.STAGES) <= set(report.stages) and list(report.stages)[0] == "loading"
    assert all(seconds > 0 for seconds in report.stages.values())
    # Svc + the F0 predictor; one slicing pass; 1.5 s of speech is one piece through every model stage
    assert report.calls["loading"] == 2 and report.calls["slicing"] == 1
    assert report.calls["piece preparation"] == report.calls["F0"] == report.calls["encoder"] \
        == report.calls["synthesizer"] >= 1
    assert report.calls["writing"] >= 3  # open, write, close
    # stages never overlap: together they fit in the total
    assert 0 <= report.other_s < report.total_s
    assert sum(report.stages.values()) <= report.total_s
    assert report.rtf(report.total_s) == pytest.approx(report.total_s / 1.5)
    assert report.rtf(report.stages["F0"]) == pytest.approx(report.stages["F0"] / report.audio_s)
    assert report.peak_rss_mb > 50 and report.rss_before_mb > 0
    # the second length reuses the loaded Svc: no loading stage, its own peak RSS
    assert looped.audio_s == pytest.approx(2.5, abs=1 / 44100) and looped.samples_written == round(2.5 * 44100)
    assert "loading" not in looped.stages and looped.peak_rss_mb > 50
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "threads 1" in out and "load average" in out
    assert f"{report.samples_written} samples written" in out


def test_crop_and_flags(tmp_path: Path) -> None:
    if not infer_e2e.CLIP.exists():
        pytest.skip("reference clip data/edge/long_slt_60s.wav not available")
    path, seconds = infer_e2e.crop_clip(infer_e2e.CLIP, 0.25, tmp_path)
    assert seconds == pytest.approx(0.25, abs=1 / 44100) and sf.info(str(path)).frames == 11025
    full, seconds = infer_e2e.crop_clip(infer_e2e.CLIP, None, tmp_path)
    assert full == infer_e2e.CLIP and 60 <= seconds < 61
    looped, seconds = infer_e2e.crop_clip(infer_e2e.CLIP, 130, tmp_path)  # the clip repeated, then cut
    data, _ = sf.read(str(looped), dtype="int16")
    original, _ = sf.read(str(infer_e2e.CLIP), dtype="int16", always_2d=True)
    n = len(original)
    assert seconds == pytest.approx(130, abs=1 / 44100) and len(data) == round(130 * 44100)
    assert (data[:n] == original[:, 0]).all() and (data[n:2 * n] == original[:, 0]).all()
    for argv in (["--seconds", "0"], ["--seconds", "60,x"], ["--f0_predictor", "rmvpe"], ["--threads", "0"],
                 ["--device", "tpu"]):
        with pytest.raises(SystemExit):
            infer_e2e.parse_args(argv)
    assert infer_e2e.parse_args([]).f0_predictor == "fcpe" and infer_e2e.parse_args([]).seconds == [None]
    assert infer_e2e.parse_args(["--seconds", "60,300"]).seconds == [60.0, 300.0]
