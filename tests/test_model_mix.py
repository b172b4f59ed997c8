"""model_mix.py / export.mix static voice mixing on the synth fixtures."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch

import model_mix
import utils
from conftest import FIXTURES, load_fixture, zeroed_rng
from generator import load_generator
from core.checkpoint import safe_torch_load
from core.config import load_config
from export.mix import mix_weights
from export.release import ModelFileError

BASE = FIXTURES / "synth" / "base_vec768"
AUDIO_TOL = 1e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory, single_thread) -> dict[str, Path]:
    """a.pth = G_800.pth's weights (enc_q included) with the release's light optimizer state (reading
    G_800's 3000 tensors weights-only is slow); b.pth = a with every tensor moved by seeded noise (same
    structure); one_spk.pth = a with a single-speaker emb_g; release.pth / half.pth = 4.1's release files."""
    if not (BASE / "G_800.pth").exists():
        pytest.skip("synth fixture base_vec768 not available")
    folder = tmp_path_factory.mktemp("mix")
    release = safe_torch_load(BASE / "G_800_release.pth")
    a = dict(safe_torch_load(BASE / "G_800.pth"), optimizer=release["optimizer"])
    torch.save(a, folder / "a.pth")
    gen = torch.Generator().manual_seed(7)
    b = dict(a, model={k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in a["model"].items()})
    torch.save(b, folder / "b.pth")
    one = dict(a, model=dict(a["model"], **{"emb_g.weight": a["model"]["emb_g.weight"][:1].clone()}))
    torch.save(one, folder / "one_spk.pth")
    torch.save(release, folder / "release.pth")
    torch.save(safe_torch_load(BASE / "G_800_release_half.pth"), folder / "half.pth")
    return {p.stem: p for p in folder.iterdir()}


def _mix(capsys, *argv: str) -> tuple[int, str]:
    code = model_mix.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _max_rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-12))


def test_weights() -> None:
    convex = mix_weights([50, 30, 20], 0)
    e = [math.exp(0.5), math.exp(0.3), math.exp(0.2)]
    assert convex.dtype == torch.float32 and torch.allclose(convex, torch.tensor([x / sum(e) for x in e]))
    assert abs(float(convex.sum()) - 1) < 1e-6
    assert abs(float(mix_weights([100, 0, 250, -40], "convex").sum()) - 1) < 1e-6
    assert mix_weights([50, 30, 20], "linear").tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert torch.equal(mix_weights([50, 30, 20], 1), mix_weights([50, 30, 20], "linear"))
    with pytest.raises(ModelFileError, match="not one of 0 / convex, 1 / linear"):
        mix_weights([50], 2)


def test_self_mix_keeps_weights_and_audio(models, tmp_path, capsys) -> None:
    out = tmp_path / "self.pth"
    a = models["a"]
    assert model_mix.main(["-i", str(a), str(a), str(a), "-r", "50", "30", "20", "-o", str(out)]) == 0
    assert "convex weights: a.pth 0.3907, a.pth 0.3199, a.pth 0.2894" in capsys.readouterr().out
    mixed, ref = safe_torch_load(out), safe_torch_load(a)
    # The first file's dict with `model` replaced: everything else is the first file's.
    assert list(mixed) == list(ref) and mixed["iteration"] == ref["iteration"] == 3
    assert mixed["optimizer"] == ref["optimizer"] and mixed["learning_rate"] == ref["learning_rate"]
    assert list(mixed["model"]) == list(ref["model"])
    for key, value in ref["model"].items():
        assert mixed["model"][key].dtype == value.dtype and _max_rel(mixed["model"][key], value) < 1e-6, key
    _, arrays = load_fixture("synth/base_vec768")
    loaded = load_generator(out, load_config(BASE / "config.json"), BASE / "config.json", torch.device("cpu"))
    with torch.no_grad(), zeroed_rng():
        audio, _ = loaded.net.infer(torch.from_numpy(arrays["in_c"]), torch.from_numpy(arrays["in_f0"]),
                                      torch.from_numpy(arrays["in_uv"]), g=torch.from_numpy(arrays["in_sid"]))
    assert float((audio - torch.from_numpy(arrays["zn_audio"])).abs().max()) <= AUDIO_TOL


def test_linear_half_half_is_the_mean(models, tmp_path) -> None:
    out = tmp_path / "mean.pth"
    assert model_mix.main(["-i", str(models["a"]), str(models["b"]), "-r", "50", "50", "--mode", "linear",
                           "-o", str(out)]) == 0
    a, b, mixed = (safe_torch_load(p)["model"] for p in (models["a"], models["b"], out))
    for key in a:
        assert torch.equal(mixed[key], (a[key] + b[key]) / 2), key
    assert not torch.equal(mixed["pre.weight"], a["pre.weight"])
    # Convex 70/30 lies between the two and differs from linear 70/30 (softmax weights).
    out2 = utils.mix_model([models["a"], models["b"]], [70, 30], 0, output=tmp_path / "c.pth")
    w = mix_weights([70, 30], "convex")
    mixed = safe_torch_load(out2)["model"]
    assert out2 == str(tmp_path / "c.pth") and abs(float(w[0]) - 0.59869) < 1e-4
    assert torch.allclose(mixed["pre.weight"], w[0] * a["pre.weight"] + w[1] * b["pre.weight"], atol=1e-7)


def test_half_releases_mix_in_float32(models, tmp_path) -> None:
    half = models["half"]
    out = utils.mix_model([half, half], [80, 20], 1, output=tmp_path / "h.pth")  # linear, sums to 1
    mixed, ref = safe_torch_load(out)["model"], safe_torch_load(half)["model"]
    for key, value in ref.items():
        assert mixed[key].dtype == torch.float16, key
        assert torch.equal(mixed[key], value), key  # 0.8x + 0.2x in float32 rounds back to x
    # A float32 first model and an fp16 second: the result takes the first one's dtype.
    out = utils.mix_model([models["release"], half], [50, 50], "linear", output=tmp_path / "r.pth")
    rel = safe_torch_load(models["release"])["model"]
    mixed = safe_torch_load(out)["model"]
    for key, value in rel.items():
        assert mixed[key].dtype == torch.float32
        assert torch.allclose(mixed[key], 0.5 * value + 0.5 * ref[key].float(), rtol=0, atol=1e-7), key


def test_default_output_is_cwd_output_pth(models, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert model_mix.main(["-i", str(models["release"]), str(models["release"]), "--mode", "linear"]) == 0
    assert "linear mix weights sum to 2" in caplog.text  # default 100 each, as in the web UI
    mixed, ref = safe_torch_load(tmp_path / "output.pth"), safe_torch_load(models["release"])
    assert torch.equal(mixed["model"]["pre.weight"], 2 * ref["model"]["pre.weight"])
    assert sorted(os.listdir(tmp_path)) == ["output.pth"]  # written atomically, no temp file left


def test_refusals_say_what_differs(models, tmp_path, capsys) -> None:
    out = tmp_path / "o.pth"
    a, one = models["a"], models["one_spk"]
    code, err = _mix(capsys, "-i", a, one, "-r", "50", "50", "-o", out)
    assert code == 2 and f"{one} has 1 speakers (emb_g.weight [1, 16]) but {a} has 3 (emb_g.weight [3, 16])" in err
    code, err = _mix(capsys, "-i", a, models["release"], "-o", out)
    assert code == 2 and f"keys differ: only in {a}: enc_q.* (103 keys)" in err
    state = safe_torch_load(a)
    state["model"]["pre.weight"] = state["model"]["pre.weight"][:, :256].clone()
    torch.save(state, tmp_path / "c256.pth")
    code, err = _mix(capsys, "-i", a, tmp_path / "c256.pth", "-o", out)
    assert code == 2 and f"shapes differ: pre.weight [20, 768, 5] in {a} vs [20, 256, 5] in {tmp_path / 'c256.pth'}" in err
    code, err = _mix(capsys, "-i", a, models["b"], "-r", "50", "-o", out)
    assert code == 2 and "2 models but 1 mix rates" in err
    code, err = _mix(capsys, "-i", a, models["b"], "-o", a)
    assert code == 2 and f"refusing to overwrite the input {a}" in err
    code, err = _mix(capsys, "-i", a, tmp_path / "missing.pth", "-o", out)
    assert code == 2 and f"{tmp_path / 'missing.pth'} not found" in err
    assert not out.exists()


def test_optional_config_check(models, tmp_path, capsys) -> None:
    out = tmp_path / "o.pth"
    assert model_mix.main(["-i", str(models["release"]), str(models["half"]), "-c", str(BASE / "config.json"),
                           "-o", str(out)]) == 0 and out.exists()
    cfg = json.loads((BASE / "config.json").read_text())
    cfg["model"]["ssl_dim"] = 256
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    code, err = _mix(capsys, "-i", models["a"], models["b"], "-c", tmp_path / "c.json", "-o", tmp_path / "x.pth")
    assert code == 2 and f"{models['a']} does not fit {tmp_path / 'c.json'} (check model.ssl_dim)" in err
    assert not (tmp_path / "x.pth").exists()
