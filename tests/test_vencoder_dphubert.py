"""dphubert against the reduced pruned-wav2vec2 checkpoint of fixtures/vencoder (pruned conv channels,
dummy_weight, per-layer heads / feed-forward sizes, removed blocks) plus config and file errors."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import VENCODER_FIXTURES, load_npz
from conftest import assert_close_f32 as _close
from core.checkpoint import CheckpointError
from vencoder.dphubert import DPHubertEncoder, DPHubertModel, dphubert_to_model_keys, load_dphubert

DPHUBERT = VENCODER_FIXTURES / "dphubert_reduced.pt"

pytestmark = [pytest.mark.skipif(not DPHUBERT.exists(), reason="fixtures/vencoder not available"),
              pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_npz(VENCODER_FIXTURES / "dphubert_reduced_ref.npz")


@pytest.fixture(scope="module")
def dphubert(registry_encoder) -> DPHubertEncoder:
    enc = registry_encoder("dphubert", DPHUBERT)
    assert isinstance(enc, DPHubertEncoder)
    return enc


def _saved(tmp_path, name: str, **config) -> str:
    ckpt = torch.load(DPHUBERT, weights_only=True)
    ckpt["config"].update(config)
    path = tmp_path / name
    torch.save(ckpt, path)
    return str(path)


def test_dphubert_output_stereo_and_intermediates(dphubert, ref):
    wav = torch.from_numpy(ref["wav"])
    assert dphubert.dim == 48
    _close(dphubert.encoder(wav), ref["dphubert"])
    _close(dphubert.encoder(torch.stack([wav, wav], dim=1)), ref["dphubert"])  # [N, 2] is averaged
    model = dphubert.model
    with torch.inference_mode():
        features = model.feature_extractor(wav[None])  # after dummy_weight
        _close(features.transpose(1, 2), ref["conv_features"])
        _close(model.encoder_input(features), ref["encoder_input"])
        for i, layer_ref in enumerate(ref["layer_outputs"]):
            _close(model(wav[None], output_layer=i + 1)[0], layer_ref)


def test_pruned_structure(dphubert):
    layers = dphubert.model.encoder.transformer.layers
    assert [layer.attention is not None for layer in layers] == [True, False, True]
    assert [layer.feed_forward is not None for layer in layers] == [True, True, False]
    assert layers[2].attention.q_proj.out_features == 2 * 16  # heads x head_dim, not E
    assert dphubert.model.feature_extractor.dummy_weight.shape == (26,)


def test_key_renaming():
    state = {"feature_extractor.conv_layers.0.conv.weight": 0, "feature_extractor.conv_layers.0.layer_norm.bias": 1,
             "feature_extractor.conv_layers.3.layer_norm.weight": 2, "feature_extractor.dummy_weight": 3,
             "encoder.transformer.layers.0.layer_norm.weight": 4}
    assert list(dphubert_to_model_keys(state, "group_norm")) == [
        "feature_extractor.conv_layers.0.0.weight", "feature_extractor.conv_layers.0.2.bias",
        "feature_extractor.conv_layers.3.2.weight", "feature_extractor.dummy_weight",
        "encoder.transformer.layers.0.layer_norm.weight"]
    assert "feature_extractor.conv_layers.3.2.1.weight" in dphubert_to_model_keys(state, "layer_norm")


def test_normalize_waveform_and_layer_norm_variant(tmp_path, ref):
    wav = torch.from_numpy(ref["wav"]) * 2.0 + 0.1
    plain = load_dphubert(DPHUBERT)
    normed = load_dphubert(_saved(tmp_path, "norm.pth", normalize_waveform=True))
    with torch.inference_mode():
        expected = plain(torch.nn.functional.layer_norm(wav, wav.shape)[None])
        assert torch.allclose(normed(wav[None]), expected, rtol=0, atol=1e-5)
        assert not torch.allclose(plain(wav[None]), expected, atol=1e-3)
    # A layer_norm extractor needs one LayerNorm per conv: the group_norm file lacks them.
    with pytest.raises(CheckpointError, match=r"missing.*feature_extractor\.conv_layers\.1\.2\.1\.weight"):
        load_dphubert(_saved(tmp_path, "ln.pth", extractor_mode="layer_norm"))
    with torch.device("meta"):  # pre-LN, layer-norm extractor, aux head: builds with the expected sizes
        model = DPHubertModel({**torch.load(DPHUBERT, weights_only=True)["config"], "extractor_mode": "layer_norm",
                               "encoder_layer_norm_first": True, "aux_num_out": 10})
    assert model.dim == 10 and model.feature_extractor.conv_layers[6][2][1].weight.shape == (26,)


# ------------------------------------------------------------------------------------------------
# config and wrong files
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"encoder_remaining_heads": [3, 0, 2]}, "pruned WavLM"),
    ({"encoder_prune_attention_heads": True}, "unfinished DPHuBERT training checkpoint"),
    ({"encoder_num_heads": [3, 0]}, "encoder_num_heads must list 3 layers"),
    ({"extractor_mode": "batch_norm"}, "extractor_mode 'batch_norm' is not one of group_norm, layer_norm"),
    ({"encoder_num_heads": [4, 0, 2]}, r"q_proj\.weight file \[48, 48\] vs model \[64, 48\]"),
])
def test_bad_config(tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message):
        load_dphubert(_saved(tmp_path, "bad.pth", **change))


def test_extra_tensors_are_logged_and_skipped(tmp_path, ref, caplog):
    ckpt = torch.load(DPHUBERT, weights_only=True)
    ckpt["state_dict"]["encoder.transformer.layers.1.attention.q_proj.weight"] = torch.zeros(48, 48)
    torch.save(ckpt, tmp_path / "extra.pth")
    with caplog.at_level(logging.WARNING, logger="vencoder.dphubert"):
        model = load_dphubert(tmp_path / "extra.pth")
    assert "1 tensors not used" in caplog.text and "layers.1.attention.q_proj.weight" in caplog.text
    with torch.inference_mode():
        _close(model(torch.from_numpy(ref["wav"])[None]).transpose(1, 2), ref["dphubert"])


def test_wrong_kind_of_file():
    with pytest.raises(CheckpointError, match=r"wavlm_reduced\.pt is not a DPHuBERT checkpoint.*'cfg'"):
        load_dphubert(VENCODER_FIXTURES / "wavlm_reduced.pt")
    with pytest.raises(CheckpointError, match=r"contentvec_reduced\.pt is not a DPHuBERT.*Python objects"):
        load_dphubert(VENCODER_FIXTURES / "contentvec_reduced.pt")
