"""Shallow diffusion (-shd), diffusion-only (-od) and -se in `Svc` and inference_main (inference/shallow.py).

Models: the tiny So-VITS workspace of test_infer_tool (48-dim random ContentVec, 3 speakers) plus a
tiny Unit2Mel (48-dim units, 3 speakers, 2 layers x 16 channels) saved as train_diff.py does, with the
tiny NSF-HiFiGAN fixture as vocoder. The diffusion `spk` map deliberately orders the speakers
differently from config.json, so every test that looks at speaker ids also checks the name mapping.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import inference_main
from conftest import FIXTURES
from inference.infer_tool import Svc, SvcError
from inference.shallow import NO_DIFFUSION
from inference.slice_loop import read_wav
from modules.mel_processing import volume_extract
from test_infer_tool import SR, UNITS, build_workspace
from vdecoder.nsf_hifigan.models import VocoderNotFoundError

# Diffusion ids: speaker0 -> 2, speaker2 -> 0; speaker1 is absent (-> 0 with a warning).
DIFF_SPK = {"speaker2": 0, "other": 1, "speaker0": 2}


def _write_config(path: Path, ws: Path, **model: int) -> Path:
    cfg = yaml.safe_load((FIXTURES / "diffusion" / "diffusion.yaml").read_text())
    cfg["data"]["encoder_out_channels"] = UNITS
    cfg["model"].update(n_spk=3, **model)
    cfg["spk"] = dict(DIFF_SPK)
    cfg["vocoder"]["ckpt"] = str(ws / "pretrain/nsf_hifigan/model")
    path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    return path


def _build_diffusion(ws: Path) -> None:
    """logs/44k/diffusion/{model_0.pt, config.yaml (full), shallow.yaml (k_step_max 50), novocoder.yaml}."""
    from diffusion.unit2mel import Unit2Mel

    folder = ws / "logs/44k/diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    model = Unit2Mel(UNITS, 3, use_pitch_aug=True, out_dims=128, n_layers=2, n_chans=16, n_hidden=32)
    with torch.no_grad():  # the zero-initialised output layer would make the denoiser ignore its inputs
        weight = model.decoder.denoise_fn.output_projection.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(8)) * 0.05)
    torch.save({"global_step": 0, "model": model.state_dict()}, folder / "model_0.pt")
    _write_config(folder / "config.yaml", ws)
    _write_config(folder / "shallow.yaml", ws, k_step_max=50)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["vocoder"]["ckpt"] = str(ws / "pretrain/nowhere/model")
    (folder / "novocoder.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, single_thread) -> Path:
    root = build_workspace(tmp_path_factory.mktemp("diff"))
    _build_diffusion(root)
    short = sf.read(root / "raw/short.wav", dtype="float32")[0]
    sf.write(root / "raw/a.wav", short[:SR], SR, subtype="PCM_16")
    return root


def _svc(ws: Path, model: str = "logs/44k/G_1.pth", config: str = "config.yaml", **flags: bool) -> Svc:
    return Svc(ws / model, ws / "logs/44k/config.json", "cpu", cluster_model_path="",
               diffusion_model_path=ws / "logs/44k/diffusion/model_0.pt",
               diffusion_config_path=ws / "logs/44k/diffusion" / config, pretrain_dir=ws / "pretrain", **flags)


@pytest.fixture(scope="module")
def plain(ws: Path) -> Svc:
    return _svc(ws)


@pytest.fixture(scope="module")
def shd(ws: Path) -> Svc:
    svc = _svc(ws, shallow_diffusion=True, spk_mix_enable=True)
    svc.diffusion.use_tqdm = False
    return svc


@pytest.fixture(scope="module")
def od(ws: Path) -> Svc:
    # -od never reads the So-VITS checkpoint or config.json: these paths do not exist
    svc = Svc(ws / "logs/44k/G_404.pth", ws / "nothere/config.json", "cpu", cluster_model_path="",
              diffusion_model_path=ws / "logs/44k/diffusion/model_0.pt",
              diffusion_config_path=ws / "logs/44k/diffusion/config.yaml", only_diffusion=True,
              pretrain_dir=ws / "pretrain")
    svc.diffusion.use_tqdm = False
    return svc


@pytest.fixture(scope="module")
def outputs(ws: Path, plain: Svc, shd: Svc, od: Svc) -> dict[str, np.ndarray]:
    path = ws / "raw/a.wav"
    return {"plain": plain.slice_inference(path, "speaker0", 0),
            "shd": shd.slice_inference(path, "speaker0", 0),
            "se": shd.slice_inference(path, "speaker0", 0, second_encoding=True),
            "od": od.slice_inference(path, "speaker0", 0)}


def _spy(svc: Svc, monkeypatch) -> list[dict]:
    """Record what the Unit2Mel receives and returns."""
    calls: list[dict] = []
    model = svc.diffusion.model
    real = model.forward

    def record(units, f0, volume, spk_id=None, spk_mix_dict=None, aug_shift=None, gt_spec=None, infer=True,
               infer_speedup=10, method="dpm-solver", k_step=300, use_tqdm=True):
        mel = real(units, f0, volume, spk_id=spk_id, gt_spec=gt_spec, infer=infer, infer_speedup=infer_speedup,
                   method=method, k_step=k_step, use_tqdm=use_tqdm)
        calls.append({"units": units, "f0": f0, "volume": volume, "spk_id": spk_id, "gt_spec": gt_spec,
                      "speedup": infer_speedup, "method": method, "k_step": k_step, "mel": mel})
        return mel

    monkeypatch.setattr(model, "forward", record)
    return calls


def test_modes_keep_the_length_and_change_the_audio(outputs: dict[str, np.ndarray], shd: Svc, od: Svc,
                                                    plain: Svc) -> None:
    assert (plain.output_mode, shd.output_mode, od.output_mode) == ("sovits", "sovdiff", "diff")
    assert shd.enhancer is None and od.net_g_ms is None and plain.diffusion is None
    ref = outputs["plain"]
    assert len(ref) == SR
    for mode in ("shd", "se", "od"):
        out = outputs[mode]
        assert out.dtype == np.float32 and len(out) == len(ref), mode
        assert np.isfinite(out).all() and np.sqrt(np.mean(out ** 2)) > 1e-3, mode
        assert np.abs(out - ref).max() > 1e-2, mode
    assert np.abs(outputs["se"] - outputs["shd"]).max() > 1e-3
    assert np.abs(outputs["od"] - outputs["shd"]).max() > 1e-2


def test_shallow_diffusion_starts_from_the_sovits_mel(shd: Svc, ws: Path, monkeypatch) -> None:
    sovits: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = shd.net_g_ms.infer

    def record(c, f0, uv, g=None, noice_scale=0.35, predict_f0=False, vol=None):
        audio, f0_used = real(c, f0=f0, uv=uv, g=g, noice_scale=noice_scale, predict_f0=predict_f0, vol=vol)
        sovits.append((c.clone(), audio[0, 0].clone(), f0_used.clone()))
        return audio, f0_used

    monkeypatch.setattr(shd.net_g_ms, "infer", record)
    calls = _spy(shd, monkeypatch)
    vocoded: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    vocoder = shd.diffusion.vocoder
    real_vocoder = vocoder.infer

    def vocode(mel, f0):
        audio = real_vocoder(mel, f0)
        vocoded.append((mel, f0, audio))
        return audio

    monkeypatch.setattr(vocoder, "infer", vocode)
    with open(ws / "raw/a.wav", "rb") as f:
        audio, n, frames = shd.infer("speaker0", 0, f, k_step=30)
    (c, so_audio, f0_used), = sovits
    call, = calls
    assert n == frames * 512 == len(so_audio)
    gt = shd.diffusion.vocoder.extract(so_audio[None], SR)
    torch.testing.assert_close(call["gt_spec"], gt)
    assert call["gt_spec"].shape == (1, frames, 128)
    torch.testing.assert_close(call["f0"], f0_used[:, :, None])
    torch.testing.assert_close(call["units"], c.transpose(1, 2))
    # no vol_embedding in this config.json: 4.1 measures the So-VITS output's loudness
    torch.testing.assert_close(call["volume"], volume_extract(so_audio[None], 512)[None, :, None])
    assert call["spk_id"].tolist() == [[DIFF_SPK["speaker0"]]]
    assert (call["k_step"], call["method"], call["speedup"]) == (30, "dpm-solver++", 10)
    (mel, f0, voiced), = vocoded
    assert mel is call["mel"] and f0 is call["f0"]
    torch.testing.assert_close(audio, voiced.reshape(-1))  # the enhancer stays off with shallow diffusion

    calls.clear()
    with open(ws / "raw/a.wav", "rb") as f:
        shd.infer("speaker1", 0, f, second_encoding=True)  # not in the diffusion map -> id 0
    call = calls[0]
    so_audio = sovits[-1][1]
    torch.testing.assert_close(call["units"], shd.encode_units(so_audio, frames).T[None])
    assert not torch.allclose(call["units"], sovits[-1][0].transpose(1, 2))
    assert call["spk_id"].tolist() == [[0]]


def test_only_diffusion_skips_sovits_and_uses_the_diffusion_config(od: Svc, ws: Path, monkeypatch) -> None:
    assert od.net_g_ms is None and od.hps_ms is None
    assert od.spk2id == DIFF_SPK and od.speech_encoder == "vec768l12"
    calls = _spy(od, monkeypatch)
    wav = read_wav(ws / "raw/a.wav", od.target_sample)
    with open(ws / "raw/a.wav", "rb") as f:
        od.infer("speaker2", 0, f)
    call, = calls
    frames = len(wav) // 512
    assert call["gt_spec"] is None and call["units"].shape == (1, frames, UNITS)
    torch.testing.assert_close(call["volume"], volume_extract(torch.from_numpy(wav)[None], 512)[None, :, None])
    assert call["spk_id"].tolist() == [[0]]
    with pytest.raises(SvcError, match=r"not in the speaker list.*diffusion/config.yaml spk.*other, speaker0, "):
        od.slice_inference(ws / "raw/a.wav", "speaker1", 0)


def test_results_repeat_and_leave_the_global_rng_alone(shd: Svc, od: Svc, ws: Path,
                                                       outputs: dict[str, np.ndarray]) -> None:
    state = torch.random.get_rng_state()
    again = shd.slice_inference(ws / "raw/a.wav", "speaker0", 0)
    np.testing.assert_array_equal(again, outputs["shd"])
    np.testing.assert_array_equal(od.slice_inference(ws / "raw/a.wav", "speaker0", 0), outputs["od"])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_k_step_beyond_k_step_max_fails_before_audio_work(ws: Path, shd: Svc, monkeypatch) -> None:
    svc = _svc(ws, config="shallow.yaml", shallow_diffusion=True)
    assert svc.diffusion.k_step_max == 50
    monkeypatch.setattr(svc, "convert_piece", lambda *a, **k: pytest.fail("audio work before the check"))
    text = r"The shallow diffusion k_step is greater than the maximum diffusion k_step\(k_step_max\)!.*60.*50"
    with pytest.raises(SvcError, match=text):
        svc.slice_inference(ws / "raw/a.wav", "speaker0", 0, k_step=60)
    with pytest.raises(SvcError, match=r"1001 > k_step_max 1000"):
        shd.infer("speaker0", 0, ws / "raw/a.wav", k_step=1001)


def test_shallow_only_model_refuses_diffusion_only(ws: Path) -> None:
    text = r"This model can only be used for shallow diffusion and can not infer alone!.*50.*1000"
    with pytest.raises(SvcError, match=text):
        _svc(ws, model="logs/44k/G_404.pth", config="shallow.yaml", only_diffusion=True)


def test_missing_files(ws: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    svc = Svc(ws / "logs/44k/G_1.pth", ws / "logs/44k/config.json", "cpu", cluster_model_path="",
              diffusion_model_path=ws / "logs/44k/diffusion/model_9.pt", shallow_diffusion=True,
              pretrain_dir=ws / "pretrain")
    assert NO_DIFFUSION in caplog.text and svc.output_mode == "sovits" and not svc.diffusion_used
    with pytest.raises(SvcError, match=r"diffusion config .*nothere.yaml not found \(use -dc\)"):
        _svc(ws, config="nothere.yaml", shallow_diffusion=True)
    with pytest.raises(VocoderNotFoundError, match=r"pretrain/nowhere/model.*pretrain/nsf_hifigan"):
        _svc(ws, config="novocoder.yaml", shallow_diffusion=True)


def test_speaker_mix_reaches_the_diffusion_model(shd: Svc, ws: Path, monkeypatch) -> None:
    calls = _spy(shd, monkeypatch)
    mix = {0: [[0.0, 1.0, 1.0, 0.0]], 1: [[0.0, 1.0, 0.0, 0.0]], 2: [[0.0, 1.0, 0.0, 1.0]]}
    out = shd.slice_inference(ws / "raw/a.wav", mix, 0, use_spk_mix=True)
    assert len(out) == SR and np.isfinite(out).all()
    weights = calls[0]["spk_id"]  # [T, 3] over the diffusion ids: speaker0 -> 2, speaker2 -> 0
    assert weights.shape == (calls[0]["units"].shape[1], 3)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(weights)))
    assert weights[0, 2] > 0.95 and weights[-1, 0] > 0.95 and float(weights[:, 1].abs().max()) == 0.0


@pytest.fixture
def cli(ws: Path, monkeypatch, caplog):
    monkeypatch.chdir(ws)
    caplog.set_level(logging.INFO)
    return lambda *args: inference_main.main(list(args))


def test_command_line_names_files_by_what_ran(cli, ws: Path, caplog, capsys,
                                              outputs: dict[str, np.ndarray]) -> None:
    model = ["-m", "logs/44k/G_1.pth", "-c", "logs/44k/config.json", "-n", "a.wav", "-s", "speaker0"]
    assert cli(*model, "-shd", "-eh", "-wf", "wav") == 0  # -dm/-dc defaults: logs/44k/diffusion/...
    assert " [Loading] logs/44k/diffusion/model_0.pt" in caplog.text
    assert "Loaded diffusion model, sampler is dpm-solver++, speedup: 10 " in caplog.text
    out = sf.read(ws / "results/a.wav_0key_speaker0_sovdiff_pm.wav", dtype="float32")[0]
    np.testing.assert_allclose(out, np.clip(outputs["shd"], -1, 1), atol=1 / 32768)
    assert cli("-m", "logs/44k/G_404.pth", "-n", "a.wav", "-s", "speaker0", "-od", "-wf", "wav") == 0
    assert sf.info(ws / "results/a.wav_0key_speaker0_diff_pm.wav").frames == SR
    assert cli(*model, "-shd", "-dm", "logs/44k/diffusion/model_7.pt") == 0
    assert (ws / "results/a.wav_0key_speaker0_sovits_pm.flac").exists()  # quirk 48: named by what ran
    assert not (ws / "results/a.wav_0key_speaker0_sovdiff_pm.flac").exists()
    assert NO_DIFFUSION in caplog.text and "files are named _sovits_" in caplog.text
    capsys.readouterr()
    assert cli(*model, "-shd", "-dc", "logs/44k/diffusion/shallow.yaml", "-ks", "51") == 1
    assert re.search(r"greater than the maximum diffusion k_step\(k_step_max\)!.*51.*50", capsys.readouterr().err)
    assert cli(*model, "-shd", "-dc", "configs/nothere.yaml") == 1
    assert "diffusion config configs/nothere.yaml not found (use -dc)" in capsys.readouterr().err
