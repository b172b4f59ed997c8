"""whisper-ppg / whisper-ppg-large against the reduced OpenAI-layout checkpoint of fixtures/vencoder
(log-mel front end, encoder, frame rule, inputs past 30 s) plus file errors and the full-size layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import VENCODER_FIXTURES, load_npz
from conftest import assert_close_f32 as _close
from core.checkpoint import CheckpointError
from vencoder.whisper import (CHUNK_SAMPLES, WhisperAudioEncoder, WhisperDims, WhisperPPGEncoder,
                              load_whisper_encoder, log_mel_spectrogram)

WHISPER = VENCODER_FIXTURES / "whisper_reduced.pt"

pytestmark = [pytest.mark.skipif(not WHISPER.exists(), reason="fixtures/vencoder not available"),
              pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_npz(VENCODER_FIXTURES / "whisper_reduced_ref.npz")


@pytest.fixture(scope="module")
def whisper(registry_encoder) -> WhisperPPGEncoder:
    enc = registry_encoder("whisper-ppg", WHISPER)
    assert isinstance(enc, WhisperPPGEncoder) and enc.long_input == "chunk"
    return enc


def test_whisper_ppg_output_and_intermediates(whisper, ref):
    wav = torch.from_numpy(ref["wav"])
    assert whisper.dim == 64
    out = whisper.encoder(wav)
    _close(out, ref["whisper_ppg"])  # [1, 64, 24123 // 320 = 75]
    # Stereo is averaged like every other encoder (4.1's Whisper wrapper only took [N]).
    assert torch.equal(whisper.encoder(torch.stack([wav, wav], dim=1)), out)
    mel = log_mel_spectrogram(torch.nn.functional.pad(wav, (0, CHUNK_SAMPLES - wav.shape[0]))[None])
    assert mel.shape == (1, 80, 3000)
    _close(mel[0, :, :200], ref["mel_head"])
    assert torch.all(mel[0, :, 200:] == float(ref["mel_tail_value"]))  # zero padding: floor at max - 8
    with torch.inference_mode():
        _close(whisper.model(mel)[0, :100], ref["encoder_out_head"])


@pytest.mark.parametrize("n", [320, 639, 16000])
def test_frame_rule(whisper, n):
    assert whisper.encoder(torch.randn(n) * 0.1).shape == (1, 64, n // 320)


def test_too_short_and_bad_option(whisper):
    with pytest.raises(ValueError, match="too short for whisper-ppg: 319 samples"):
        whisper.encoder(torch.zeros(319))
    with pytest.raises(ValueError, match="long_input must be one of chunk, refuse, trim"):
        WhisperPPGEncoder(WHISPER, "cpu", long_input="split")  # type: ignore[arg-type]


def test_longer_than_30_s(whisper, ref):
    """Chunking = encoding each 30 s window on its own: the tail window is the fixture clip itself."""
    head = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, CHUNK_SAMPLES).astype(np.float32))
    wav = torch.cat([head, torch.from_numpy(ref["wav"])])
    out = whisper.encoder(wav)
    assert out.shape == (1, 64, wav.shape[0] // 320) == (1, 64, 1575)
    _close(out[:, :, 1500:], ref["whisper_ppg"])
    trimmed = WhisperPPGEncoder(WHISPER, "cpu", long_input="trim").encoder(wav)  # 4.1: first 30 s only
    assert trimmed.shape == (1, 64, 1500) and torch.allclose(trimmed, out[:, :, :1500], rtol=0, atol=1e-5)
    refusing = WhisperPPGEncoder(WHISPER, "cpu", long_input="refuse")
    with pytest.raises(ValueError, match=r"at most 30 s per slice, got 31\.5 s.*-cl 25 -lg 1"):
        refusing.encoder(wav)


def test_large_v2_name_and_fp16_weights(registry_encoder):
    enc = registry_encoder("whisper-ppg-large", WHISPER)
    assert enc.dim == 64
    stored = torch.load(WHISPER, weights_only=True)["model_state_dict"]
    assert stored["encoder.conv1.weight"].dtype == torch.float16
    weight = enc.model.conv1.weight
    assert weight.dtype == torch.float32 and torch.equal(weight, stored["encoder.conv1.weight"].float())
    assert torch.equal(enc.model.positional_embedding, stored["encoder.positional_embedding"].float())


# ------------------------------------------------------------------------------------------------
# full-size layout and wrong files
# ------------------------------------------------------------------------------------------------
def test_full_size_layout():
    manifest = json.loads((VENCODER_FIXTURES / "manifest_whisper_medium_full.json").read_text())
    expected = {k[len("encoder."):]: v["shape"] for k, v in manifest["keys"].items() if k.startswith("encoder.")}
    assert len(expected) < len(manifest["keys"])  # decoder keys exist in the file and are ignored
    for dims, width in ((manifest["dims"], 1024), (manifest["dims_large_v2"], 1280)):
        with torch.device("meta"):
            model = WhisperAudioEncoder(WhisperDims.from_dict(dims))
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert shapes["positional_embedding"] == [1500, width]
        if width == 1024:
            assert shapes == expected
        else:  # large-v2: same keys, 32 blocks
            assert len(model.blocks) == 32 and shapes["blocks.31.mlp.0.weight"] == [4 * width, width]


def test_wrong_kind_of_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"wavlm_reduced\.pt is not an OpenAI Whisper checkpoint.*'cfg'"):
        load_whisper_encoder(VENCODER_FIXTURES / "wavlm_reduced.pt")
    with pytest.raises(CheckpointError, match=r"contentvec_reduced\.pt is not an OpenAI Whisper.*Python objects"):
        load_whisper_encoder(VENCODER_FIXTURES / "contentvec_reduced.pt")
    ckpt = torch.load(WHISPER, weights_only=True)
    del ckpt["model_state_dict"]["encoder.blocks.1.attn.key.weight"]
    ckpt["dims"]["n_audio_head"] = 5
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: unusable Whisper dims.*divisible"):
        load_whisper_encoder(tmp_path / "bad.pt")
    ckpt["dims"]["n_audio_head"] = 4
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt.*missing.*blocks\.1\.attn\.key\.weight"):
        load_whisper_encoder(tmp_path / "bad.pt")
