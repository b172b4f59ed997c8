"""Stand-alone NSF-HiFiGAN loader and wrapper against the 4.1 fixture `nsf_hifigan/`.

The fixture's release-layout vocoder is loaded strictly; with torch.rand/randn returning zeros the
harmonic source and audio match the recording, and so does the seeded real-RNG run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_fixture, zeroed_rng
from vdecoder.hifigan.models import Generator
from vdecoder.nsf_hifigan.models import NsfHifiGAN, VocoderLoadError, VocoderNotFoundError, load_model

MODEL_DIR = FIXTURES / "nsf_hifigan" / "model_dir"
AUDIO_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> tuple[dict, dict[str, np.ndarray]]:
    return load_fixture("nsf_hifigan")


@pytest.fixture(scope="module")
def loaded() -> tuple[Generator, object]:
    return load_model(MODEL_DIR / "model", device="cpu")


def test_load_model_builds_release_network(loaded) -> None:
    generator, h = loaded
    assert isinstance(generator, Generator) and not generator.training
    assert h.sampling_rate == 44100 and h.num_mels == 128 and h.hop_size == 512
    names = [n for n, _ in generator.named_parameters()]
    assert not any(n.endswith(("weight_g", "weight_v")) for n in names), "weight norm not folded"
    assert "conv_pre.weight" in names and "cond.weight" not in names


def test_zeroed_rng_source_and_audio(fixture, loaded) -> None:
    meta, arrays = fixture
    generator, _ = loaded
    mel, f0 = torch.from_numpy(arrays["in_mel"]), torch.from_numpy(arrays["in_f0"])
    with torch.no_grad(), zeroed_rng() as calls:
        audio, source = generator(mel, f0, return_source=True)
    assert source.shape == arrays["zn_har_source"].shape
    np.testing.assert_allclose(source.numpy(), arrays["zn_har_source"], atol=AUDIO_TOL, rtol=0)
    assert audio.shape == arrays["zn_audio"].shape
    np.testing.assert_allclose(audio.numpy(), arrays["zn_audio"], atol=AUDIO_TOL, rtol=0)
    # Same draws in the same order and shapes (rand = initial phases, randn = source noise).
    expected = [(name.split(".")[-1].removesuffix("_like"), shape)
                for name, shape in meta["rng_calls_while_zeroed"]["sequence"]]
    assert calls == expected


def test_seeded_real_rng_audio(fixture, loaded) -> None:
    _, arrays = fixture
    generator, _ = loaded
    torch.manual_seed(1234)
    with torch.no_grad():
        audio = generator(torch.from_numpy(arrays["in_mel"]), torch.from_numpy(arrays["in_f0"]))
    np.testing.assert_allclose(audio.numpy(), arrays["rng_seed1234_audio"], atol=AUDIO_TOL, rtol=0)


def test_wrapper_mel_and_time_major_forward(fixture) -> None:
    _, arrays = fixture
    vocoder = NsfHifiGAN(MODEL_DIR / "model", device="cpu")
    assert (vocoder.sample_rate, vocoder.hop_size, vocoder.dimension) == (44100, 512, 128)
    mel = vocoder.extract(torch.from_numpy(arrays["in_signal"])[None])
    assert mel.shape == (1, 86, 128)
    np.testing.assert_allclose(mel.transpose(1, 2).numpy(), arrays["in_mel"], atol=AUDIO_TOL, rtol=0)
    # A 32-frame head keeps this fast; the generator's receptive field is well under 16 frames,
    # so the first 16 frames of output equal those of the full-length recording.
    f0 = torch.from_numpy(arrays["in_f0"])[:, :32]
    extra = torch.cat([f0, torch.full((1, 3), 440.0)], dim=1)[..., None]  # [1, 35, 1]: cut to 32
    with zeroed_rng():
        audio = vocoder(torch.from_numpy(arrays["in_mel"])[:, :, :32].transpose(1, 2), extra)
    assert audio.shape == (1, 32 * 512)
    np.testing.assert_allclose(audio[:, :16 * 512].numpy(), arrays["zn_audio"][:, 0, :16 * 512],
                               atol=AUDIO_TOL, rtol=0)
    with pytest.raises(ValueError, match="frames"):
        vocoder(mel, f0[:, :10])


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def _copy_release(tmp_path: Path, config: dict | None = None) -> Path:
    shutil.copy(MODEL_DIR / "model", tmp_path / "model")
    if config is None:
        shutil.copy(MODEL_DIR / "config.json", tmp_path / "config.json")
    else:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "model"


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(VocoderNotFoundError) as err:
        load_model(tmp_path / "model")
    message = str(err.value)
    assert str(tmp_path / "model") in message and "pretrain/nsf_hifigan" in message
    assert "enhancer" in message and "config.json" in message
    assert isinstance(err.value, FileNotFoundError)


def test_missing_config_file(tmp_path: Path) -> None:
    shutil.copy(MODEL_DIR / "model", tmp_path / "model")
    with pytest.raises(VocoderNotFoundError) as err:
        NsfHifiGAN(tmp_path / "model", device="cpu")
    message = str(err.value)
    assert str(tmp_path / "config.json") in message and "pretrain/nsf_hifigan" in message


def test_mis_shaped_keys_are_reported(tmp_path: Path) -> None:
    config = json.loads((MODEL_DIR / "config.json").read_text())
    config["upsample_initial_channel"] = 64
    path = _copy_release(tmp_path, config)
    with pytest.raises(VocoderLoadError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and str(tmp_path / "config.json") in message
    assert "299 with a different shape" in message and "noise_convs.4.bias file [1] vs model [2]" in message


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path) -> None:
    state = torch.load(MODEL_DIR / "model", map_location="cpu", weights_only=True)["generator"]
    state.pop("conv_post.bias")
    state["cond.weight"] = torch.zeros(32, 16, 1)
    _copy_release(tmp_path)
    torch.save({"generator": state}, tmp_path / "model")
    with pytest.raises(VocoderLoadError) as err:
        load_model(tmp_path / "model")
    message = str(err.value)
    assert "1 missing from the file" in message and "(conv_post.bias)" in message
    assert "1 in the file not used by the model (cond.weight)" in message
    assert str(tmp_path / "model") in message


def test_not_a_release_file(tmp_path: Path) -> None:
    state = torch.load(MODEL_DIR / "model", map_location="cpu", weights_only=True)["generator"]
    _copy_release(tmp_path)
    torch.save(state, tmp_path / "model")  # a bare state dict, no 'generator' wrapper
    with pytest.raises(VocoderLoadError, match="'generator'"):
        load_model(tmp_path / "model")
    (tmp_path / "model").write_bytes(b"not a torch file")
    with pytest.raises(VocoderLoadError, match="cannot read"):
        load_model(tmp_path / "model")


def test_parametrized_weight_norm_names_load(loaded, tmp_path: Path) -> None:
    state = torch.load(MODEL_DIR / "model", map_location="cpu", weights_only=True)["generator"]
    renamed = {k.replace(".weight_g", ".parametrizations.weight.original0")
               .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in state.items()}
    assert renamed.keys() != state.keys()
    _copy_release(tmp_path)
    torch.save({"generator": renamed}, tmp_path / "model")
    generator, _ = load_model(tmp_path / "model")
    reference = loaded[0].state_dict()
    assert generator.state_dict().keys() == reference.keys()
    for key, value in generator.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_unsafe_release_file_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w')",)

    _copy_release(tmp_path)
    torch.save({"generator": {"conv_post.bias": Payload()}}, tmp_path / "model")
    with pytest.raises(VocoderLoadError, match=r"cannot read .*: .*model: refused.*exec.*Nothing"):
        load_model(tmp_path / "model")
    assert not marker.exists()
