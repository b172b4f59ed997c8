"""modules/hparams.py and configs_template/* against the 4.1 manifests and diffusion fixtures."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, ROOT
from core.atomic import write_atomic
from core.config import (
    ConfigError,
    ConfigNotFoundError,
    HParams,
    dump_config,
    get_hparams_from_file,
    load_config,
    save_config,
)
from core.schema import ModelConfig, sovits_config

TEMPLATES = ROOT / "configs_template"
MANIFESTS = FIXTURES / "manifests"
DIFFUSION = FIXTURES / "diffusion"
SYNTH_CONFIGS = sorted((FIXTURES / "synth").glob("*/config.json"))
TEMPLATE_SPK = {"nyaru": 0, "huiyu": 1, "nen": 2, "paimon": 3, "yunhao": 4}


def _json(path: Path):
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("template, manifest", [("config_template.json", "synthesizer_default.json"),
                                                ("config_tiny_template.json", "synthesizer_tiny.json")])
def test_sovits_templates_match_4_1(template, manifest):
    cfg = json.loads((TEMPLATES / template).read_text())
    model = _json(MANIFESTS / manifest)["model_config"]
    assert list(cfg) == ["train", "data", "model", "spk"]
    assert list(cfg["model"].items()) == list(model.items())  # values and key order
    assert cfg["spk"] == TEMPLATE_SPK and list(cfg["spk"]) == list(TEMPLATE_SPK)
    # train/data: the synth fixture configs are complete training configs with template train/data
    full = _json(SYNTH_CONFIGS[0])
    assert list(cfg["train"].items()) == list(full["train"].items())
    assert list(cfg["data"].items()) == list(full["data"].items())
    assert cfg["train"]["port"] == "8001" and cfg["train"]["eps"] == 1e-9 and cfg["train"]["c_kl"] == 1.0
    assert cfg["data"]["max_wav_value"] == 32768.0 and cfg["data"]["mel_fmin"] == 0.0


def test_tiny_template_differs_only_where_4_1_says():
    base = json.loads((TEMPLATES / "config_template.json").read_text())
    tiny = json.loads((TEMPLATES / "config_tiny_template.json").read_text())
    diff = {k: tiny["model"][k] for k in base["model"] if base["model"][k] != tiny["model"][k]}
    assert diff == {"filter_channels": 512, "upsample_initial_channel": 400,
                    "use_depthwise_conv": True, "flow_share_parameter": True}
    assert {k: v for k, v in base.items() if k != "model"} == {k: v for k, v in tiny.items() if k != "model"}


def test_preprocess_effects_change_template_values():
    """Every key preprocess_flist_config.py reports as changed exists in its template with another value."""
    effects = _json(MANIFESTS / "preprocess_flist_config_effects.json")["effects"]
    assert len(effects) > 10
    for case, effect in effects.items():
        tpl = json.loads((ROOT / effect["template"]).read_text())
        for dotted, new in effect["changed_keys"].items():
            node = tpl
            for part in dotted.split("."):
                node = node[part]
            assert node != new, (case, dotted)
    unchanged = effects["--speech_encoder vec256l9"]["changed_keys"]
    assert "model.filter_channels" not in unchanged


def test_diffusion_template_matches_4_1_fields():
    fields = _json(DIFFUSION / "template_fields.json")
    ours = yaml.safe_load((TEMPLATES / "diffusion_template.yaml").read_text(encoding="utf-8"))
    assert json.dumps(ours) == json.dumps(fields)  # same values, types and key order
    assert load_config(TEMPLATES / "diffusion_template.yaml").to_dict() == fields


def test_templates_validate():
    for name in ("config_template.json", "config_tiny_template.json"):
        sovits_config(load_config(TEMPLATES / name), for_training=True)
    for path in SYNTH_CONFIGS:
        sovits_config(load_config(path), for_training=True)


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [TEMPLATES / "config_template.json", TEMPLATES / "config_tiny_template.json",
                                  *SYNTH_CONFIGS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_json_round_trip_is_byte_identical(path, tmp_path):
    out = tmp_path / "config.json"
    save_config(load_config(path), out)
    assert out.read_bytes() == path.read_bytes()


def test_yaml_written_sorted_like_4_1(tmp_path):
    """4.1's trainer writes config.yaml sorted; saving the fixture's diffusion.yaml gives those bytes."""
    src, want = DIFFUSION / "diffusion.yaml", DIFFUSION / "saver_config.yaml"
    if not want.exists():
        pytest.skip("diffusion fixture not available")
    out = tmp_path / "config.yaml"
    save_config(load_config(src), out)
    assert out.read_bytes() == want.read_bytes()
    assert load_config(out) == load_config(src)


def test_non_ascii_speakers_are_escaped(tmp_path):
    hps = load_config(TEMPLATES / "config_template.json")
    hps["spk"] = {"中文歌手": 0, "nyaru": 1}
    save_config(hps, tmp_path / "c.json")
    text = (tmp_path / "c.json").read_text(encoding="ascii")
    assert '"\\u4e2d\\u6587\\u6b4c\\u624b": 0' in text
    assert list(load_config(tmp_path / "c.json").spk.keys()) == ["中文歌手", "nyaru"]
    save_config({"spk": {"中文": 0}}, tmp_path / "d.yaml")
    assert (tmp_path / "d.yaml").read_text(encoding="ascii") == 'spk:\n  "\\u4E2D\\u6587": 0\n'
    assert load_config(tmp_path / "d.yaml").spk["中文"] == 0


def test_save_is_atomic(tmp_path):
    path = tmp_path / "config.json"
    save_config({"a": 1}, path)

    def fail(f):  # noqa: ANN001
        f.write(b"{\"half\": ")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, fail)
    assert path.read_text() == '{\n  "a": 1\n}'
    assert os.listdir(tmp_path) == ["config.json"]


# ---------------------------------------------------------------------------------------------
# the HParams object
# ---------------------------------------------------------------------------------------------
def test_hparams_access_and_mapping_protocol():
    hps = load_config(TEMPLATES / "config_template.json")
    assert hps.train.batch_size == 6 and hps["model"]["ssl_dim"] == 768 and hps.model.resblock == "1"
    assert isinstance(hps.model, HParams) and isinstance(hps.spk, HParams)
    assert list(hps.keys()) == ["train", "data", "model", "spk"] and list(hps) == list(hps.keys())
    assert len(hps.spk) == 5 and "nen" in hps.spk and "bob" not in hps.spk
    assert dict(hps.spk.items()) == TEMPLATE_SPK and list(hps.spk.values()) == [0, 1, 2, 3, 4]
    assert hps.model.get("missing", 7) == 7 and hps.get("train") is hps.train
    hps.model_dir = "./logs/44k"  # the trainer adds fields
    hps.extra = {"nested": {"x": 1}}
    assert hps.model_dir == "./logs/44k" and hps.extra.nested.x == 1
    plain = hps.to_dict()
    assert type(plain["extra"]["nested"]) is dict and type(plain["model"]) is dict
    assert list(plain["model"]) == list(json.loads((TEMPLATES / "config_template.json").read_text())["model"])
    assert pickle.loads(pickle.dumps(hps)) == hps and copy.deepcopy(hps) == hps
    assert pickle.loads(pickle.dumps(hps)).model.ssl_dim == 768


def test_unknown_keys_are_kept(tmp_path):
    src = tmp_path / "c.json"
    src.write_text(json.dumps({"train": {"custom": [1, {"a": 2}]}, "zzz": None, "model": {}}, indent=2))
    out = tmp_path / "o.json"
    save_config(load_config(src), out)
    assert out.read_text() == src.read_text()


def test_missing_field_errors_name_field_and_file():
    hps = load_config(TEMPLATES / "config_template.json")
    with pytest.raises(AttributeError, match=r"config_template\.json is missing model\.foo"):
        _ = hps.model.foo
    with pytest.raises(KeyError, match=r"missing spk\.bob"):
        _ = hps.spk["bob"]
    assert not hasattr(hps.model, "foo")
    infer = get_hparams_from_file(TEMPLATES / "config_template.json", infer_mode=True)
    assert infer.model.foo is None and infer.data.unit_interpolate_mode == "nearest"
    assert get_hparams_from_file(TEMPLATES / "config_template.json") == hps


def test_load_errors(tmp_path):
    with pytest.raises(ConfigNotFoundError, match="nope.json not found"):
        load_config(tmp_path / "nope.json")
    assert issubclass(ConfigNotFoundError, FileNotFoundError)
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "train": {\n    "a": 1,\n  }\n}')
    with pytest.raises(ConfigError, match=r"bad\.json: invalid JSON at line 4"):
        load_config(bad)
    gbk = tmp_path / "gbk.json"
    gbk.write_bytes('{"spk": {"中文": 0}}'.encode("gbk"))
    with pytest.raises(ConfigError, match=r"gbk\.json is not UTF-8"):
        load_config(gbk)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(lst)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _template() -> dict:
    return json.loads((TEMPLATES / "config_template.json").read_text())


def _error(cfg, for_training=True) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        sovits_config(HParams(cfg), "configs/config.json", for_training)
    return err.value


def test_validation_messages():
    cfg = _template()
    cfg["model"]["ssl_dim"] = "768a"
    err = _error(cfg)
    assert str(err) == "configs/config.json: model.ssl_dim must be an integer, got '768a'"
    assert err.field == "model.ssl_dim" and err.path == "configs/config.json"

    cfg = _template()
    del cfg["model"]["gin_channels"]
    cfg["train"]["fp16_run"] = 1
    err = _error(cfg)
    assert str(err).splitlines() == ["configs/config.json: train.fp16_run must be true or false, got 1",
                                     "configs/config.json: model.gin_channels is missing"]

    cfg = _template()
    del cfg["model"]
    assert "section model is missing" in str(_error(cfg))


def test_validation_port_and_purpose():
    cfg = _template()
    for port in ("8001", 8001):
        cfg["train"]["port"] = port
        sovits_config(cfg, "c.json", for_training=True)  # 4.1 writes a string; an integer works too
    cfg["train"]["port"] = "80a1"
    assert "train.port must be a port number" in str(_error(cfg))
    del cfg["train"]
    sovits_config(cfg, "c.json")  # inference needs no train section
    assert "section train is missing" in str(_error(cfg))
    cfg = _template()
    for key in ("speech_encoder", "vol_embedding", "use_automatic_f0_prediction"):
        del cfg["model"][key]  # 4.0-era config: fine, readers fall back
    del cfg["data"]["unit_interpolate_mode"]
    sovits_config(cfg, "c.json", for_training=True)
    cfg["model"]["vol_embedding"] = "yes"
    assert "model.vol_embedding must be true or false, got 'yes'" in str(_error(cfg))


def test_validation_cross_checks():
    cfg = _template()
    cfg["model"]["upsample_rates"] = [8, 8, 2, 2]
    msg = str(_error(cfg))
    assert "model.upsample_rates multiply to 256 but data.hop_length is 512" in msg
    assert "model.upsample_kernel_sizes must have one entry per" in msg
    cfg = _template()
    cfg["model"]["n_speakers"] = 3
    assert "spk['paimon'] = 3 is outside 0..2 (model.n_speakers)" in str(_error(cfg))


def test_field_table_covers_what_the_model_needs():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model = _json(MANIFESTS / "synthesizer_default.json")["model_config"]
    dead = {"n_layers_q", "speaker_embedding"}  # 4.1 writes these and reads them nowhere
    assert set(model) - dead <= fields
    assert dump_config({"b": 1, "a": {"c": 2}}) == '{\n  "b": 1,\n  "a": {\n    "c": 2\n  }\n}'
