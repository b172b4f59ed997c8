"""Smoke run of bench/train_step.py on a micro config, plus its synthetic batch."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from bench import train_step
from bench.synth_infer import TINY_MODEL
from core.config import HParams, load_config
from core.runtime import bf16_problem
from modules.mel_processing import spectrogram_torch
from core.schema import model_section

# The template's train/data sections with a very small generator, a 4-frame segment and a narrow
# discriminator, so a step takes a fraction of a second.
MICRO_MODEL = {**TINY_MODEL, "n_speakers": 4, "vol_embedding": True}
D_WIDTH = 0.03125


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = json.loads(train_step.CONFIGS["default"].read_text())
    raw["model"] = copy.deepcopy(MICRO_MODEL)
    raw["spk"] = {f"speaker{i}": i for i in range(MICRO_MODEL["n_speakers"])}
    raw["train"].update(segment_size=2048, discriminator_width=D_WIDTH)
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(raw))
    return path


def test_batch_is_a_collated_training_batch(micro_config: Path) -> None:
    hps = load_config(micro_config)
    c, f0, spec, audio, g, lengths, uv, volume = train_step.make_batch(hps)
    b, t = train_step.BATCH, train_step.FRAMES
    assert c.shape == (b, 16, t) and f0.shape == uv.shape == volume.shape == (b, t)
    assert spec.shape == (b, 1025, t) and audio.shape == (b, 1, t * 512)
    assert lengths.tolist() == [t] * b and g.tolist() == [[0], [1]]
    # The spectrogram is the real one of the audio it is paired with.
    expect = spectrogram_torch(audio[1], 2048, 44100, 512, 2048)
    assert torch.allclose(spec[1:2], expect, atol=1e-6)
    assert bool((f0[uv == 0] == 0).all()) and 0.7 < float(uv.mean()) < 0.9
    assert 210 < float(f0[uv > 0].min()) and float(f0.max()) < 460
    # vol_embedding true: the volume is each frame's RMS.
    rms = audio[0, 0].reshape(t, 512).pow(2).mean(1).sqrt()
    assert torch.allclose(volume[0], rms)
    no_vol = HParams({**hps.to_dict(), "model": {**MICRO_MODEL, "vol_embedding": False}})
    assert train_step.make_batch(no_vol)[7] is None


def test_run_config_steps_the_real_trainer(micro_config: Path) -> None:
    result = train_step.run_config(str(micro_config), repeats=1, warmup=0)
    from models import MultiPeriodDiscriminator, SynthesizerTrn

    n_d = sum(p.numel() for p in MultiPeriodDiscriminator(width=D_WIDTH).parameters())
    n_g = sum(p.numel() for p in SynthesizerTrn(1025, 4, **model_section(MICRO_MODEL).network_args()).parameters())
    assert (result.parameters_g, result.parameters_d, result.segment_frames) == (n_g, n_d, 4)
    assert result.repeats == 1 and result.device == "cpu"
    assert 0 < result.cpu_seconds and 0 < result.seconds < 30 and result.segment_frames <= train_step.FRAMES
    # Mel L1 alone is c_mel (45) x a few units on random weights: a real generator loss was computed.
    assert math.isfinite(result.loss_g_total) and result.loss_g_total > 10
    assert math.isfinite(result.loss_d) and result.loss_d > 0
    assert result.peak_kind.startswith("RSS") and math.isfinite(result.peak_mib)


def test_main(micro_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The child's work in process (a fresh interpreter only adds start-up time); its protocol is tested below.
    def in_process(config: str, repeats: int, device: str, threads: int | None, amp: str) -> train_step.StepResult:
        return train_step.run_config(config, repeats, device, amp=amp)

    monkeypatch.setattr(train_step, "run_in_child", in_process)
    results = train_step.main(["--configs", str(micro_config), "--repeats", "1", "--threads", "1",
                               "--amp", "fp32,fp16,bf16"])
    assert len(results) == 3 and all(r.threads == 1 and r.config == str(micro_config) for r in results)
    assert all(r.seconds > 0 and r.cpu_seconds > 0 and r.repeats == 1 for r in results)
    # The Trainer's own rule on this CPU: fp16 never, bf16 only with native bf16.
    native_bf16 = bf16_problem(torch.device("cpu")) is None
    assert [r.precision for r in results] == ["fp32", "fp32", "bf16" if native_bf16 else "fp32"]
    with pytest.raises(SystemExit):
        train_step.parse_args(["--amp", "fp8"])
    with pytest.raises(SystemExit):
        train_step.parse_args(["--configs", "no_such_config.json"])
    assert train_step.resolve_config("tiny") == train_step.CONFIGS["tiny"]


def test_child_prints_a_parseable_result(micro_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_step.main(["--child", str(micro_config), "--repeats", "1"])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(train_step.RESULT_TAG)]
    assert len(line) == 1
    parsed = train_step.StepResult(**json.loads(line[0][len(train_step.RESULT_TAG):]))
    assert parsed.config == str(micro_config) and parsed.seconds > 0
