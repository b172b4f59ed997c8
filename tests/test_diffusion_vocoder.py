"""diffusion.vocoder.Vocoder and load_model_vocoder against the 4.1 fixtures `diffusion/vocoder_mel.*`.

The mel cases were recorded with the public 44.1 kHz vocoder's config (`vocoder_config.json`); only
its STFT fields matter for `extract`. The tiny test vocoder in `nsf_hifigan/model_dir` has the same
STFT fields (checked below), so it serves both the mel cases and the generator tests.
"""
from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import FIXTURES
from core.schema import DiffusionVocoder
from diffusion.unit2mel import load_model_vocoder
from diffusion.vocoder import VOCODERS, Vocoder
from vdecoder.nsf_hifigan.models import VocoderNotFoundError

DIR = FIXTURES / "diffusion"
MODEL = FIXTURES / "nsf_hifigan" / "model_dir" / "model"
MEL_TOL = 1e-4  # README: vocoder mel abs 1e-4
STFT_FIELDS = ("sampling_rate", "num_mels", "n_fft", "win_size", "hop_size", "fmin", "fmax")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def mel_meta() -> dict:
    if not (DIR / "vocoder_mel.npz").exists() or not MODEL.exists():
        pytest.skip("diffusion / nsf_hifigan fixtures not available")
    return json.loads((DIR / "vocoder_mel.json").read_text())


@pytest.fixture(scope="module")
def mel_arrays(mel_meta) -> dict[str, np.ndarray]:
    with np.load(DIR / "vocoder_mel.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def vocoder(mel_meta) -> Vocoder:
    return Vocoder("nsf-hifigan", MODEL, device="cpu")


def test_tiny_vocoder_has_the_recorded_stft_settings(vocoder) -> None:
    recorded = json.loads((DIR / "vocoder_config.json").read_text())
    tiny = json.loads((MODEL.parent / "config.json").read_text())
    assert {k: tiny[k] for k in STFT_FIELDS} == {k: recorded[k] for k in STFT_FIELDS}
    assert (vocoder.vocoder_sample_rate, vocoder.vocoder_hop_size, vocoder.dimension) == (44100, 512, 128)


@pytest.mark.parametrize("name", ["sr44100_key0", "sr44100_key2p7", "sr44100_keym4p2", "sr44100_batch2_key0",
                                  "sr22050_key0", "sr44100_short600_key0"])
def test_extract_cases(vocoder, mel_meta, mel_arrays, name: str) -> None:
    case = mel_meta["cases"][name]
    mel = vocoder.extract(torch.from_numpy(mel_arrays[case["input"]]), case["sample_rate"], case["keyshift"])
    assert list(mel.shape) == case["output_shape"]
    np.testing.assert_allclose(mel.numpy(), mel_arrays[case["output"]], atol=MEL_TOL, rtol=0)


def test_extract_reproduces_the_model_fixture_gt_spec(vocoder) -> None:
    with np.load(DIR / "diffusion_cases.npz") as z:
        audio, gt = z["in_audio"], z["in_gt_spec"]
    mel = vocoder.extract(torch.from_numpy(audio)[None], 44100)
    np.testing.assert_allclose(mel.numpy(), gt, atol=MEL_TOL, rtol=0)


def _mel_f0(frames: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(DIR / "diffusion_cases.npz") as z:
        return torch.from_numpy(z["in_gt_spec"][:, :frames]), torch.from_numpy(z["in_f0"])


def test_infer_shape_and_f0_truncation(vocoder) -> None:
    mel, f0 = _mel_f0()
    torch.manual_seed(0)
    audio = vocoder.infer(mel, f0)  # f0 has 48 frames, the mel 8: only the first 8 are used
    torch.manual_seed(0)
    same = vocoder.infer(mel, f0[:, :8])
    assert audio.shape == (1, 1, 8 * 512) and torch.isfinite(audio).all() and audio.abs().max() > 0
    torch.testing.assert_close(audio, same, rtol=0, atol=0)


def test_log10_variant_scales_the_mel(vocoder) -> None:
    log10 = Vocoder("nsf-hifigan-log10", MODEL, device="cpu")
    mel, f0 = _mel_f0()
    torch.manual_seed(0)
    scaled = log10.infer(mel, f0)
    torch.manual_seed(0)
    reference = vocoder.infer(mel * 0.434294, f0)
    torch.manual_seed(0)
    plain = vocoder.infer(mel, f0)
    torch.testing.assert_close(scaled, reference, rtol=0, atol=1e-6)
    assert (scaled - plain).abs().max() > 1e-3
    # The mel front end is the same for both types.
    audio = torch.randn(1, 4096, generator=torch.Generator().manual_seed(1)) * 0.1
    torch.testing.assert_close(log10.extract(audio, 44100), vocoder.extract(audio, 44100))


def test_unknown_type_and_missing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="nsf-hifigan, nsf-hifigan-log10"):
        Vocoder("hifigan", MODEL, device="cpu")
    assert set(VOCODERS) == {"nsf-hifigan", "nsf-hifigan-log10"}
    # The config check offers exactly the registered vocoder types.
    assert set(typing.get_args(typing.get_type_hints(DiffusionVocoder)["type"])) == set(VOCODERS)
    with pytest.raises(VocoderNotFoundError) as err:
        Vocoder("nsf-hifigan", tmp_path / "nsf_hifigan" / "model", device="cpu")
    text = str(err.value)
    assert str(tmp_path / "nsf_hifigan" / "model") in text and "pretrain/nsf_hifigan" in text
    assert "config.json" in text and isinstance(err.value, FileNotFoundError)


def _diffusion_dir(tmp_path: Path, vocoder_ckpt: Path) -> Path:
    data = yaml.safe_load((DIR / "diffusion.yaml").read_text())
    data["vocoder"]["ckpt"] = str(vocoder_ckpt)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(DIR / "model_2000.pt", tmp_path / "model_2000.pt")
    return tmp_path / "model_2000.pt"


def test_load_model_vocoder_end_to_end(tmp_path) -> None:
    model, vocoder, args = load_model_vocoder(_diffusion_dir(tmp_path, MODEL), "cpu")
    assert isinstance(vocoder, Vocoder) and args.infer.method == "dpm-solver++" and not model.training
    with np.load(DIR / "diffusion_cases.npz") as z:
        a = {k: torch.from_numpy(z[k]) for k in ("in_units", "in_f0", "in_volume", "in_spk_id", "in_gt_spec",
                                                 "out__ddim_k20")}
    with torch.no_grad():
        mel = model(a["in_units"], a["in_f0"], a["in_volume"], spk_id=a["in_spk_id"], gt_spec=a["in_gt_spec"],
                    infer_speedup=10, method="ddim", k_step=20, use_tqdm=False, noise_fn=torch.zeros_like)
        audio = vocoder.infer(mel, a["in_f0"])
    np.testing.assert_allclose(mel.numpy(), a["out__ddim_k20"].numpy(), atol=MEL_TOL, rtol=0)
    assert audio.shape == (1, 1, 48 * 512) and torch.isfinite(audio).all()


def test_load_model_vocoder_names_the_config_for_a_missing_vocoder(tmp_path) -> None:
    missing = tmp_path / "pretrain" / "nsf_hifigan" / "model"
    with pytest.raises(VocoderNotFoundError) as err:
        load_model_vocoder(_diffusion_dir(tmp_path, missing), "cpu")
    assert str(missing) in str(err.value) and str(tmp_path / "config.yaml") in str(err.value)
