"""HuBERT-family speech encoders (vec768l12, vec256l9, cnhubertlarge, hubertsoft) against the reduced
reference checkpoints of fixtures/vencoder, plus the restricted fairseq unpickler and the registry."""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import VENCODER_FIXTURES, load_npz
from conftest import assert_close_f32 as _close
from core.checkpoint import CheckpointError, UnsafeCheckpointError
from utils import repeat_expand_2d
from vencoder import ENCODER_DIMS, encoder_file, encoders_of_width, get_speech_encoder, speech_encoder_names
from vencoder.encoder import PretrainNotFoundError
from vencoder.fairseq_ckpt import RestrictedUnpickler, load_fairseq_checkpoint, to_plain
from vencoder.hubert import FairseqHubertEncoder, HubertConfig, HubertModel, parse_conv_layers
from vencoder.hubert_soft import HubertSoftEncoder, build_hubert_soft, hubert_soft_to_fairseq

CONTENTVEC = VENCODER_FIXTURES / "contentvec_reduced.pt"
CONTENTVEC_DICTCFG = VENCODER_FIXTURES / "contentvec_reduced_dictcfg.pt"
CNHUBERT = VENCODER_FIXTURES / "cnhubertlarge_reduced.pt"
HUBERTSOFT = VENCODER_FIXTURES / "hubertsoft_reduced.pt"

pytestmark = [pytest.mark.skipif(not CONTENTVEC.exists(), reason="fixtures/vencoder not available"),
              pytest.mark.usefixtures("single_thread")]


def _npz(name: str) -> dict[str, np.ndarray]:
    return load_npz(VENCODER_FIXTURES / name)


@pytest.fixture(scope="module")
def cv_ref() -> dict[str, np.ndarray]:
    return _npz("contentvec_reduced_ref.npz")


@pytest.fixture(scope="module")
def vec768(registry_encoder) -> FairseqHubertEncoder:
    enc = registry_encoder("vec768l12", CONTENTVEC)
    assert isinstance(enc, FairseqHubertEncoder)
    return enc


# ------------------------------------------------------------------------------------------------
# ContentVec: vec768l12 / vec256l9
# ------------------------------------------------------------------------------------------------
def test_vec768l12_output_and_stereo(vec768, cv_ref):
    _close(vec768.encoder(torch.from_numpy(cv_ref["wav"])), cv_ref["vec768l12"])
    assert vec768.dim == 48
    _close(vec768.encoder(torch.from_numpy(cv_ref["wav_stereo"])), cv_ref["vec768l12_from_stereo"])


def test_vec256l9_from_both_cfg_layouts(registry_encoder, cv_ref):
    wav = torch.from_numpy(cv_ref["wav"])
    for source in (CONTENTVEC, CONTENTVEC_DICTCFG):
        enc = registry_encoder("vec256l9", source)
        assert enc.dim == 32
        _close(enc.encoder(wav), cv_ref["vec256l9"])
    dictcfg = FairseqHubertEncoder(CONTENTVEC_DICTCFG, "cpu", output_layer=12)
    _close(dictcfg.encoder(torch.from_numpy(cv_ref["wav_stereo"])), cv_ref["vec768l12_from_stereo"])


def test_contentvec_intermediates(vec768, cv_ref):
    model, wav = vec768.model, torch.from_numpy(cv_ref["wav"])[None]
    with torch.inference_mode():
        features = model.feature_extractor(wav)
        _close(features, cv_ref["conv_features"])
        _close(model.encoder_input(features), cv_ref["encoder_input"])
        for i, ref in enumerate(cv_ref["layer_outputs"]):
            _close(model(wav, output_layer=i + 1)[0], ref)
        _close(model(wav), cv_ref["extract_features_no_output_layer"])


def test_dictcfg_reads_like_plain_cfg():
    plain, dictcfg = load_fairseq_checkpoint(CONTENTVEC), load_fairseq_checkpoint(CONTENTVEC_DICTCFG)
    assert dictcfg["cfg"] == plain["cfg"] and dictcfg["args"] is None
    assert dictcfg["cfg"]["model"]["conv_feature_layers"] == "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"
    assert dictcfg["cfg"]["model"]["latent_temp"] == [2.0, 0.5, 0.999995]
    assert len(plain["task_state"]["dictionaries"][0].symbols) == 504
    assert all(torch.equal(plain["model"][k], dictcfg["model"][k]) for k in plain["model"])


def test_argparse_namespace_checkpoint(tmp_path, cv_ref):
    """Pre-2021 fairseq files keep the model config as an argparse.Namespace in `args`."""
    ckpt = load_fairseq_checkpoint(CONTENTVEC)
    old = {"args": argparse.Namespace(**ckpt["cfg"]["model"]), "cfg": None, "model": ckpt["model"]}
    path = tmp_path / "old.pt"
    torch.save(old, path)
    enc = FairseqHubertEncoder(path, "cpu", output_layer=12)
    _close(enc.encoder(torch.from_numpy(cv_ref["wav"])), cv_ref["vec768l12"])


# ------------------------------------------------------------------------------------------------
# cnhubertlarge (pre-LN, layer-norm extractor) and hubertsoft
# ------------------------------------------------------------------------------------------------
def test_cnhubertlarge(registry_encoder):
    ref = _npz("cnhubertlarge_reduced_ref.npz")
    enc = registry_encoder("cnhubertlarge", CNHUBERT)
    wav = torch.from_numpy(ref["wav"])
    _close(enc.encoder(wav), ref["cnhubertlarge"])
    _close(enc.encoder(torch.stack([wav, wav], dim=1)), ref["cnhubertlarge"])
    with torch.inference_mode():
        features = enc.model.feature_extractor(wav[None])
        _close(features, ref["conv_features"])
        _close(enc.model.encoder_input(features), ref["encoder_input"])
        for i, layer_ref in enumerate(ref["layer_outputs"]):  # no final LayerNorm with output_layer
            _close(enc.model(wav[None], output_layer=i + 1)[0], layer_ref)
        _close(enc.model(wav[None]), ref["extract_features_no_output_layer"])


def test_hubertsoft():
    ref = _npz("hubertsoft_reduced_ref.npz")
    enc = HubertSoftEncoder(HUBERTSOFT, "cpu", num_heads=4)  # the reduced model has 4 heads
    wav = torch.from_numpy(ref["wav"])
    assert enc.dim == 32
    _close(enc.encoder(wav), ref["hubertsoft"])
    _close(enc.encoder(torch.stack([wav, wav], dim=1)), ref["hubertsoft"])
    padded = torch.nn.functional.pad(wav, (40, 40))[None]
    with torch.inference_mode():
        _close(enc.model.feature_extractor(padded), ref["conv_features"])
        for i, layer_ref in enumerate(ref["layer_outputs"]):
            _close(enc.model(padded, output_layer=i + 1)[0], layer_ref)


@pytest.mark.parametrize("n", [400, 719, 720, 1000, 16000])
def test_frame_counts(vec768, n):
    wav = torch.zeros(n)
    assert vec768.encoder(wav).shape == (1, 48, (n - 400) // 320 + 1)
    soft = HubertSoftEncoder(HUBERTSOFT, "cpu", num_heads=4)
    assert soft.encoder(wav).shape == (1, 32, n // 320)


# ------------------------------------------------------------------------------------------------
# full-size key layouts (manifests of the real downloads), built on the meta device: no memory, no time
# ------------------------------------------------------------------------------------------------
def _manifest(name: str) -> dict:
    return json.loads((VENCODER_FIXTURES / name).read_text())


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["manifest_contentvec_base_full.json", "manifest_hubert_large_full.json"])
def test_fairseq_full_size_layout(name):
    manifest = _manifest(name)
    expected = {k: v["shape"] for k, v in manifest["keys"].items() if k not in ("label_embs_concat", "mask_emb")}
    with torch.device("meta"):
        model = HubertModel(HubertConfig.from_dict(manifest["model_cfg"]),
                            final_dim=expected["final_proj.weight"][0])
    assert _shapes(model) == expected


def test_hubertsoft_full_size_layout():
    keys = _manifest("manifest_hubertsoft_full.json")["keys"]
    state = hubert_soft_to_fairseq({k: torch.empty(v["shape"], device="meta") for k, v in keys.items()})
    with torch.device("meta"):
        model = build_hubert_soft(state, "hubert-soft-0d54a1f4.pt")
    assert _shapes(model) == {k: list(v.shape) for k, v in state.items()}
    assert model.cfg.encoder_layers == 12 and model.cfg.conv_pos == 128 and model.cfg.conv_pos_groups == 16
    assert model.final_proj.out_features == 256


# ------------------------------------------------------------------------------------------------
# registry, missing and wrong files
# ------------------------------------------------------------------------------------------------
def test_registry_names_and_dims():
    assert len(ENCODER_DIMS) == 13
    assert ENCODER_DIMS["whisper-ppg-large"] == 1280 and ENCODER_DIMS["cnhubertlarge"] == 1024
    assert ENCODER_DIMS["vec256l9"] == ENCODER_DIMS["hubertsoft"] == ENCODER_DIMS["hubertsoft-onnx"] == 256
    assert speech_encoder_names() == list(ENCODER_DIMS)  # all 13 tutorial names are buildable
    assert encoders_of_width(256) == ["vec256l9", "vec256l9-onnx", "vec256l12-onnx", "hubertsoft", "hubertsoft-onnx"]
    assert encoders_of_width(768, onnx=False) == ["vec768l12", "dphubert", "wavlmbase+"]
    assert encoders_of_width(1280) == ["whisper-ppg-large"] and encoders_of_width(512) == []
    assert encoder_file("vec256l9") == encoder_file("vec768l12") == "checkpoint_best_legacy_500.pt"
    with pytest.raises(ValueError, match="unknown speech encoder 'vec768'.*vec768l12"):
        get_speech_encoder("vec768", device="cpu")


@pytest.mark.parametrize("name, file, what", [
    ("vec768l12", "checkpoint_best_legacy_500.pt", "ContentVec"),
    ("vec256l9", "checkpoint_best_legacy_500.pt", "ContentVec"),
    ("cnhubertlarge", "chinese-hubert-large-fairseq-ckpt.pt", "HuBERT-large"),
    ("hubertsoft", "hubert-soft-0d54a1f4.pt", "HuBERT-Soft"),
    ("dphubert", "DPHuBERT-sp0.75.pth", "DPHuBERT"),
    ("wavlmbase+", "WavLM-Base+.pt", "WavLM Base+"),
    ("whisper-ppg", "medium.pt", "OpenAI Whisper"),
    ("whisper-ppg-large", "large-v2.pt", "OpenAI Whisper"),
])
def test_missing_pretrain_file(tmp_path, name, file, what):
    with pytest.raises(PretrainNotFoundError) as info:
        get_speech_encoder(name, device="cpu", pretrain_dir=tmp_path / "pretrain")
    msg = str(info.value)
    assert os.path.join(str(tmp_path / "pretrain"), file) in msg
    assert what in msg and f"needed by speech encoder {name}" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_wrong_kind_of_file(registry_encoder):
    with pytest.raises(CheckpointError, match=r"checkpoint_best_legacy_500\.pt is not a fairseq.*HuBERT-Soft"):
        registry_encoder("vec768l12", HUBERTSOFT)
    with pytest.raises(CheckpointError, match=r"hubert-soft-0d54a1f4\.pt is not a HuBERT-Soft state dict"):
        registry_encoder("hubertsoft", CONTENTVEC)


def test_dims_not_matching_cfg(tmp_path):
    ckpt = load_fairseq_checkpoint(CONTENTVEC)
    ckpt["cfg"]["model"]["encoder_embed_dim"] = 64
    del ckpt["task_state"]  # holds stand-ins, which cannot be pickled again
    path = tmp_path / "bad_dims.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"bad_dims\.pt.*post_extract_proj\.weight file \[48, 32\] vs "
                                              r"model \[64, 32\]"):
        FairseqHubertEncoder(path, "cpu")


class _Payload:
    def __init__(self, call, arg) -> None:
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_malicious_pickle_is_refused_not_executed(tmp_path, layout):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if layout == "zip":  # a torch file whose pickle calls builtins.exec
        torch.save({"cfg": None, "model": {}, "x": _Payload(exec, f"open({str(marker)!r}, 'w')")}, path)
        culprit = "builtins.exec"
    else:  # a bare pickle calling os.system
        path.write_bytes(pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2))
        culprit = "system"
    with pytest.raises(UnsafeCheckpointError, match=rf"evil\.pt: refused.*{culprit}.*Nothing"):
        FairseqHubertEncoder(path, "cpu")
    assert not marker.exists()


@pytest.mark.parametrize("dotted", ["builtins.getattr", "builtins.eval", "posix.system", "torch.load",
                                    "numpy.load", "omegaconfx.Evil", "subprocess.Popen"])
def test_unpickler_refuses_names_off_the_allow_list(dotted):
    module, name = dotted.rsplit(".", 1)
    with pytest.raises(pickle.UnpicklingError, match=dotted):
        RestrictedUnpickler(io.BytesIO(f"c{module}\n{name}\n.".encode())).load()


def test_unpickler_refuses_persistent_ids_outside_torch_load():
    with pytest.raises(pickle.UnpicklingError, match="persistent"):
        RestrictedUnpickler(io.BytesIO(b"\x80\x02X\x01\x00\x00\x00aQ.")).load()


def test_unpickler_stand_ins_become_data():
    # fairseq config enum member, pickled as cls("default"): a stand-in whose plain value is "default"
    member = b"\x80\x02cfairseq.dataclass.constants\nMode\nX\x07\x00\x00\x00default\x85R."
    assert to_plain(RestrictedUnpickler(io.BytesIO(member)).load()) == "default"
    space = pickle.dumps(argparse.Namespace(encoder_layers=3, conv_pos=16), protocol=2)
    assert to_plain(RestrictedUnpickler(io.BytesIO(space)).load()) == {"encoder_layers": 3, "conv_pos": 16}


def test_conv_layer_spec_is_parsed_not_evaluated():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_conv_layers("__import__('os').system('true')")


# ------------------------------------------------------------------------------------------------
# unit -> frame stretching (utils.repeat_expand_2d)
# ------------------------------------------------------------------------------------------------
def test_repeat_expand_2d_reference():
    ref = _npz("repeat_expand_2d_ref.npz")
    cases = sorted({k.split("_")[0] for k in ref})
    assert len(cases) == 6
    for case in cases:
        content = torch.from_numpy(ref[f"{case}_content"])
        for mode in ("left", "nearest", "linear"):
            expected = ref[f"{case}_{mode}"]
            out = repeat_expand_2d(content, expected.shape[1], mode).numpy()
            np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6, err_msg=f"{case} {mode}")
