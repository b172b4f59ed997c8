"""Smoke run of bench/synth_infer.py on a tiny config, plus its fixed inputs and config reading."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench import synth_infer
from core.runtime import bf16_problem
from conftest import FIXTURES

# Deeper posterior encoder and flow than the benches' smoke model, and many speakers.
TINY_MODEL = {**synth_infer.TINY_MODEL, "n_layers_q": 3, "n_layers_trans_flow": 3, "n_flow_layer": 2,
              "n_speakers": 200}


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    cfg = {"train": {"segment_size": 10240},
           "data": {"sampling_rate": 44100, "filter_length": 2048, "hop_length": 512},
           "model": TINY_MODEL}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.slow
def test_main_smoke(tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = synth_infer.main(["--config", str(tiny_config), "--seconds", "0.5", "--repeats", "1",
                                "--threads", "1"])
    frames = math.floor(0.5 * 44100 / 512)
    bf16_refused = bf16_problem(torch.device("cpu"))
    expected = [v for v in synth_infer.VARIANTS if v != "bf16" or bf16_refused is None]
    assert [r.name for r in results] == [synth_infer.LABELS[v] for v in expected]
    for r in results:
        assert r.audio.shape == (1, 1, frames * 512)
        assert r.seconds > 0 and r.cpu_seconds > 0 and r.audio_seconds == pytest.approx(frames * 512 / 44100)
    plain, allocator, inplace, fast = (r.audio for r in results[:4])
    assert float(plain.abs().max()) > 1e-3  # the flow/decoder produce real signal, not silence
    # The allocator and the in-place decoder do the same arithmetic: the audio is bit-identical.
    assert torch.equal(plain, allocator) and torch.equal(plain, inplace)
    # The polyphase upsamplers round differently; the noise convolutions read the same numbers.
    assert not torch.equal(plain, fast) and float((fast - plain).abs().max()) < 1e-4
    out = capsys.readouterr().out
    if bf16_refused is None:
        assert 0 < float((results[4].audio - plain).abs().max()) < 0.1
    else:
        assert f"bf16 left out: {bf16_refused}" in out


@pytest.mark.slow
def test_variant_subset(tiny_config: Path) -> None:
    results = synth_infer.main(["--config", str(tiny_config), "--seconds", "0.2", "--repeats", "1",
                                "--variants", "fast"])
    assert [r.name for r in results] == [synth_infer.LABELS["plain"], synth_infer.LABELS["fast"]]
    with pytest.raises(SystemExit):
        synth_infer.parse_args(["--variants", "fp16"])


def test_inputs_are_ten_seconds_of_singing() -> None:
    cfg = synth_infer.BenchConfig(1025, 20, {"ssl_dim": 768}, 44100, 512)
    c, f0, uv, g = synth_infer.make_inputs(cfg, 10.0)
    assert c.shape == (1, 768, 861) and f0.shape == uv.shape == (1, 861) and g.tolist() == [[0]]
    assert abs(float(c.mean())) < 0.01 and abs(float(c.std()) - 1) < 0.01
    voiced = f0[uv > 0]
    assert 0.85 < float(uv.mean()) < 0.95 and bool((f0[uv == 0] == 0).all())
    assert 200 < float(voiced.min()) < 230 and 430 < float(voiced.max()) < 460
    again = synth_infer.make_inputs(cfg, 10.0)
    assert torch.equal(c, again[0]) and torch.equal(f0, again[1])


def test_fallback_manifest_matches_default_sizes() -> None:
    manifest = FIXTURES / "manifests" / "synthesizer_default.json"
    if not manifest.exists():
        pytest.skip("synthesizer manifest not available")
    cfg = synth_infer.load_config(manifest, n_speakers=1)
    assert (cfg.spec_channels, cfg.segment_size, cfg.sampling_rate, cfg.hop_length) == (1025, 20, 44100, 512)
    assert cfg.model["ssl_dim"] == cfg.model["gin_channels"] == 768
    assert cfg.model["upsample_initial_channel"] == 512 and cfg.model["n_speakers"] == 1
