"""wavlmbase+ against the reduced WavLM checkpoint of fixtures/vencoder (gated relative position bias,
per-layer outputs, waveform normalisation) plus file errors and the full-size Base+ layout."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import VENCODER_FIXTURES, load_npz
from conftest import assert_close_f32 as _close
from core.checkpoint import CheckpointError
from vencoder.wavlm import WavLMConfig, WavLMEncoder, build_wavlm, load_wavlm, relative_position_buckets

WAVLM = VENCODER_FIXTURES / "wavlm_reduced.pt"

pytestmark = [pytest.mark.skipif(not WAVLM.exists(), reason="fixtures/vencoder not available"),
              pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_npz(VENCODER_FIXTURES / "wavlm_reduced_ref.npz")


@pytest.fixture(scope="module")
def wavlm(registry_encoder) -> WavLMEncoder:
    enc = registry_encoder("wavlmbase+", WAVLM)
    assert isinstance(enc, WavLMEncoder)
    return enc


def test_wavlm_output_stereo_and_intermediates(wavlm, ref):
    wav = torch.from_numpy(ref["wav"])
    assert wavlm.dim == 48 and wavlm.normalize is False
    _close(wavlm.encoder(wav), ref["wavlm"])
    _close(wavlm.encoder(torch.stack([wav, wav], dim=1)), ref["wavlm"])  # [N, 2] is averaged
    model = wavlm.model
    with torch.inference_mode():
        _close(model.feature_extractor(wav[None]), ref["conv_features"])
        for i, layer_ref in enumerate(ref["layer_outputs"]):
            _close(model(wav[None], output_layer=i + 1)[0], layer_ref)


def test_bias_table_lives_in_layer_0_only(wavlm):
    keys = [k for k in wavlm.model.state_dict() if "relative_attention_bias" in k]
    assert keys == ["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    assert "encoder.layers.2.self_attn.grep_a" in wavlm.model.state_dict()


def test_relative_position_buckets():
    b = relative_position_buckets(1000, 320, 800)
    assert b.shape == (1000, 1000) and b.dtype == torch.int64
    # (query i, key j) -> bucket; keys after the query use the upper half (160..319).
    assert b[5, 5] == 0 and b[10, 5] == 5 and b[5, 10] == 165
    assert b[100, 21] == 79 and b[21, 101] == 160 + 80  # last exact / first log-spaced distance
    assert b[0, 160] == 160 + 80 + int(math.log(2.0) / math.log(10.0) * 80)  # distance 160 -> 104
    assert b[999, 0] == 159 and b[0, 999] == 319  # beyond max_distance: last bucket of each half
    assert int(b.min()) == 0 and int(b.max()) == 319


def test_normalize_option(tmp_path, ref):
    wav = torch.from_numpy(ref["wav"]) * 3.0 + 0.05
    plain = WavLMEncoder(WAVLM, "cpu")
    expected = plain.encoder(torch.nn.functional.layer_norm(wav, wav.shape))
    assert not torch.allclose(plain.encoder(wav), expected, atol=1e-3)
    _close(WavLMEncoder(WAVLM, "cpu", normalize=True).encoder(wav), expected.numpy())
    ckpt = torch.load(WAVLM, weights_only=True)
    ckpt["cfg"]["normalize"] = True  # the file's cfg decides when no option is given
    torch.save(ckpt, tmp_path / "norm.pt")
    from_cfg = WavLMEncoder(tmp_path / "norm.pt", "cpu")
    assert from_cfg.normalize is True
    _close(from_cfg.encoder(wav), expected.numpy())


# ------------------------------------------------------------------------------------------------
# full-size layout and wrong files
# ------------------------------------------------------------------------------------------------
def test_full_size_layout():
    manifest = json.loads((VENCODER_FIXTURES / "manifest_wavlm_base_plus_full.json").read_text())
    expected = {k: v["shape"] for k, v in manifest["keys"].items() if k != "mask_emb"}
    with torch.device("meta"):
        model = build_wavlm(WavLMConfig.from_dict(manifest["cfg"]))
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) + 768 == manifest["n_params"]  # + mask_emb


def test_wrong_kind_of_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"whisper_reduced\.pt is not a WavLM checkpoint.*'dims'"):
        load_wavlm(VENCODER_FIXTURES / "whisper_reduced.pt")
    # A fairseq file pickles a Dictionary: read by the restricted unpickler, then recognised as fairseq.
    with pytest.raises(CheckpointError, match=r"contentvec_reduced\.pt is not a WavLM.*fairseq training"):
        load_wavlm(VENCODER_FIXTURES / "contentvec_reduced.pt")
    ckpt = torch.load(WAVLM, weights_only=True)
    ckpt["cfg"]["encoder_layers"] = 4
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt \(WavLM.*missing.*encoder\.layers\.3\.fc1\.weight"):
        load_wavlm(tmp_path / "bad.pt")
