"""bench/preprocess.py: the random "full-size" files have the released tensors (fixtures/vencoder manifests),
and a smoke run with a tiny ContentVec goes through all three parts (F0, encoder, pipeline)."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from bench import preprocess
from conftest import VENCODER_FIXTURES

# encoder name -> manifest listing the real file's tensors (key -> shape)
MANIFESTS = {
    "vec768l12": "manifest_contentvec_base_full.json",
    "cnhubertlarge": "manifest_hubert_large_full.json",
    "hubertsoft": "manifest_hubertsoft_full.json",
    "wavlmbase+": "manifest_wavlm_base_plus_full.json",
    "whisper-ppg": "manifest_whisper_medium_full.json",
}
TINY_CONTENTVEC = {**preprocess.CONTENTVEC_BASE, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
                   "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                   "encoder_attention_heads": 2, "conv_pos": 16, "conv_pos_groups": 4}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_random_files_have_the_released_tensors(name: str) -> None:
    path = VENCODER_FIXTURES / MANIFESTS[name]
    if not path.exists():
        pytest.skip("fixtures/vencoder not available")
    manifest = json.loads(path.read_text())
    real = {k: tuple(v["shape"]) for k, v in manifest["keys"].items()}
    layout = preprocess.encoder_file(name)
    if name.startswith("whisper"):  # whisper-ppg reads only the audio encoder; the bench writes only that
        real = {k: s for k, s in real.items() if k.startswith("encoder.")}
        assert layout.dtype == torch.float16  # OpenAI's files are fp16
    assert layout.shapes == real
    if "n_params" in manifest:
        assert sum(math.prod(s) for s in layout.shapes.values()) == manifest["n_params"]


def test_random_state_is_seeded_and_scaled() -> None:
    shapes = {"a.weight": (300, 200), "a.bias": (300,), "n.weight": (300,), "c.weight_g": (1, 1, 8)}
    state = preprocess.random_state(shapes, seed=7)
    assert all(torch.equal(state[k], v) for k, v in preprocess.random_state(shapes, seed=7).items())
    assert not torch.equal(state["a.weight"], preprocess.random_state(shapes, seed=8)["a.weight"])
    w = state["a.weight"]
    assert w.abs().max() <= math.sqrt(3 / 200) and float(w.std()) == pytest.approx(1 / math.sqrt(200), rel=0.05)
    assert 0.9 <= float(state["n.weight"].min()) and float(state["n.weight"].max()) <= 1.1
    assert 0.9 <= float(state["c.weight_g"].min()) and state["a.bias"].abs().max() <= 0.1


def test_main_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "CONTENTVEC_BASE", TINY_CONTENTVEC)
    rows = preprocess.main(["--clips", "1", "--f0_predictors", "pm,dio", "--encoders", "vec768l12",
                            "--workers", "1,2", "--f0_predictor", "pm", "--threads", "1", "--one_thread"])
    assert [(r.section, r.name) for r in rows] == [("F0", "pm"), ("F0", "dio"), ("encoder", "vec768l12"),
                                                   ("pipeline", "vec768l12 + pm, 1 worker"),
                                                   ("pipeline", "vec768l12 + pm, 2 workers"),
                                                   ("pipeline", "vec768l12 + pm, 1 worker, 1 thread")]
    clip = preprocess.load_clips(1)[0]
    assert 4 < clip.seconds < 6 and clip.wav16.shape[0] == math.ceil(len(clip.wav) * 16000 / 44100)
    for r in rows:
        assert r.audio_s == pytest.approx(clip.seconds) and r.wall_s > 0 and r.cpu_s > 0, r
        assert r.realtime == pytest.approx(r.audio_s / r.wall_s) and r.per_cpu == pytest.approx(r.audio_s / r.cpu_s)
    assert all(r.setup_s >= 0 for r in rows[:3])  # building / loading, kept out of the figure
    frames = (clip.wav16.shape[0] - 400) // 320 + 1
    assert f"units [1, 32, {frames}]" in rows[2].note  # the tiny model read back through the registry
    assert rows[3].note.startswith("1 clips written, 0 failed")
    assert rows[4].note.startswith("1 clips written, 0 failed")  # one clip: never more workers than clips
    ceiling = rows[3].wall_s * min(2, os.cpu_count() or 1) / rows[5].wall_s
    assert rows[5].note.endswith(f"over 1 worker (its run): 2 workers <= {ceiling:.2f}x")


def test_bad_flags() -> None:
    for argv in (["--f0_predictors", "yin"], ["--encoders", "vec999"], ["--workers", "one"], ["--clips", "0"]):
        with pytest.raises(SystemExit):
            preprocess.parse_args(argv)
    args = preprocess.parse_args(["--encoders", "all", "--f0_predictors", "", "--workers", ""])
    assert "whisper-ppg-large" in args.encoders and "vec256l9-onnx" in args.encoders
    assert args.f0_predictors == [] and args.workers == []
