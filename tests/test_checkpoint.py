"""modules/checkpoint.py against the 4.1 checkpoint files in fixtures/sovits41/synth and manifests."""
from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from conftest import FIXTURES
from core.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
    checkpoint_steps,
    clean_checkpoints,
    latest_checkpoint_path,
    load_checkpoint,
    load_model_state,
    load_state_dict_strict,
    read_checkpoint,
    safe_torch_load,
    save_checkpoint,
)

SYNTH = FIXTURES / "synth"
G_FILES = sorted(p for p in SYNTH.glob("*/G_*.pth") if p.stem[2:].isdigit())
G_800 = SYNTH / "base_vec768" / "G_800.pth"


def _need(path):
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    return path


def module_from_state_dict(sd, fill: float = 0.0) -> nn.Module:
    """A plain module tree with the file's names, shapes and aliasing; parameters set to `fill`.

    Keys ending in `.filter` are the snake decoder's fixed buffers (manifest kind 'buffer').
    """
    root = nn.Module()
    shared: dict[tuple, nn.Parameter] = {}
    for key, tensor in sd.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if part not in mod._modules:
                mod.add_module(part, nn.Module())
            mod = mod._modules[part]
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key.endswith(".filter"):
            mod.register_buffer(leaf, torch.full(tensor.shape, fill))
        elif ident in shared:  # flow_share_parameter: one tensor under two names
            mod.register_parameter(leaf, shared[ident])
        else:
            shared[ident] = nn.Parameter(torch.full(tensor.shape, fill))
            mod.register_parameter(leaf, shared[ident])
    return root


def adamw(model: nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)


@pytest.fixture(scope="module")
def fmt():
    return json.loads(_need(FIXTURES / "manifests" / "checkpoint_format.json").read_text())


# ---------------------------------------------------------------------------------------------
# layout and loading of the real 4.1 files
# ---------------------------------------------------------------------------------------------
def test_fixture_files_present():
    assert len(G_FILES) >= 4, G_FILES


@pytest.mark.parametrize("path", G_FILES, ids=lambda p: p.parent.name)
def test_layout_and_load_real_checkpoint(path, fmt):
    ckpt = read_checkpoint(path)
    spec = fmt["training_checkpoint"]
    assert list(ckpt) == spec["top_level_keys_in_order"]
    assert isinstance(ckpt["iteration"], int) and isinstance(ckpt["learning_rate"], float)
    assert list(ckpt["optimizer"]) == spec["optimizer_structure"]["keys"]
    assert any(k.endswith("weight_g") for k in ckpt["model"])

    model = module_from_state_dict(ckpt["model"])
    assert list(model.state_dict()) == list(ckpt["model"])
    opt = adamw(model)
    assert len(list(model.parameters())) == len(ckpt["optimizer"]["param_groups"][0]["params"])
    out_model, out_opt, lr, it = load_checkpoint(path, model, opt)
    assert out_model is model and out_opt is opt
    assert (lr, it) == (ckpt["learning_rate"], ckpt["iteration"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key
    saved_state, loaded_state = ckpt["optimizer"]["state"], opt.state_dict()["state"]
    assert len(loaded_state) == len(saved_state)
    for idx, entry in saved_state.items():
        assert torch.equal(loaded_state[idx]["exp_avg"], entry["exp_avg"])


def test_manifest_values_of_G_800(fmt):
    spec = fmt["training_checkpoint"]["top_level"]
    ckpt = read_checkpoint(_need(G_800))
    assert ckpt["iteration"] == spec["iteration"]["value"]
    assert ckpt["learning_rate"] == spec["learning_rate"]["value"]
    assert len(ckpt["model"]) == spec["model"]["len"]
    group = ckpt["optimizer"]["param_groups"][0]
    for key in ("lr", "betas", "eps", "weight_decay"):
        want = fmt["training_checkpoint"]["optimizer_structure"]["param_group_values_here"][key]
        assert group[key] == (tuple(want) if isinstance(group[key], tuple) else want), key


@pytest.mark.parametrize("path", G_FILES, ids=lambda p: p.parent.name)
def test_save_load_round_trip_is_tensor_identical(path, tmp_path, fmt):
    ckpt = read_checkpoint(path)
    model = module_from_state_dict(ckpt["model"])
    opt = adamw(model)
    load_checkpoint(path, model, opt)
    out = tmp_path / "G_1600.pth"
    save_checkpoint(model, opt, ckpt["learning_rate"], ckpt["iteration"], out)
    assert os.listdir(tmp_path) == ["G_1600.pth"]  # no temp file left

    again = torch.load(out, map_location="cpu", weights_only=True)
    assert list(again) == fmt["training_checkpoint"]["top_level_keys_in_order"]
    assert type(again["iteration"]) is int and type(again["learning_rate"]) is float
    assert list(again["model"]) == list(ckpt["model"])
    for key, value in ckpt["model"].items():
        assert torch.equal(again["model"][key], value), key
    assert again["optimizer"]["param_groups"][0]["params"] == ckpt["optimizer"]["param_groups"][0]["params"]

    fresh = module_from_state_dict(ckpt["model"], fill=3.0)
    load_checkpoint(out, fresh, adamw(fresh))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key


@pytest.mark.parametrize("name, dtype", [("G_800_release.pth", torch.float32),
                                         ("G_800_release_half.pth", torch.float16)])
def test_release_files_load_quietly(name, dtype, fmt, caplog):
    full = read_checkpoint(_need(G_800))["model"]
    release = read_checkpoint(_need(SYNTH / "base_vec768" / name))
    rel = fmt["release_checkpoint_compress_model"]
    assert len(full) - len(release["model"]) == rel["removed_key_count_here"]
    model = module_from_state_dict(full, fill=0.5)
    with caplog.at_level(logging.DEBUG, logger="core.checkpoint"):
        _, _, lr, it = load_checkpoint(SYNTH / "base_vec768" / name, model, adamw(model))
    assert (lr, it) == (rel["learning_rate"], rel["iteration"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    params = dict(model.named_parameters())
    assert all(p.dtype == dtype for p in params.values())  # cast to the file's dtype, as 4.1 does
    for key, value in release["model"].items():
        assert torch.equal(params[key].detach(), value), key
    enc_q = [k for k in params if k.startswith("enc_q.")]
    assert len(enc_q) == rel["removed_key_count_here"]
    assert all(bool((params[k] == 0.5).all()) for k in enc_q)  # kept the model's own values
    report = load_model_state(module_from_state_dict(full), release["model"], "rel")
    assert all(k.startswith("enc_q.") for k in report.missing) and not report.mismatched
    assert len(report.missing) == 103 and report.loaded == len(release["model"])


# ---------------------------------------------------------------------------------------------
# lenient and strict reports
# ---------------------------------------------------------------------------------------------
def _small():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    return m, {k: v.clone() for k, v in m.state_dict().items()}


def test_lenient_load_reports_missing_extra_and_mis_shaped(caplog):
    _, sd = _small()
    sd["0.weight"] = torch.ones(5, 3)  # mis-shaped
    del sd["1.bias"]  # missing
    sd["extra.weight"] = torch.ones(1)  # unexpected
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="core.checkpoint"):
        report = load_model_state(target, sd, "x.pth")
    assert report.mismatched == [("0.weight", (5, 3), (4, 3))]
    assert report.missing == ["1.bias"] and report.unexpected == ["extra.weight"]
    assert report.loaded == 2 and not report.complete
    assert torch.equal(target[0].weight, before["0.weight"])
    assert torch.equal(target[1].bias, before["1.bias"])
    assert torch.equal(target[1].weight, sd["1.weight"])
    text = caplog.text
    assert "x.pth" in text and "0.weight file [5, 3] vs model [4, 3]" in text and "1.bias" in text


def test_strict_load_names_every_problem_and_changes_nothing():
    _, sd = _small()
    sd["0.weight"] = torch.ones(5, 3)
    del sd["1.bias"]
    sd["extra.weight"] = torch.ones(1)
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(target, sd, "model.pth")
    msg = str(err.value)
    assert all(s in msg for s in ("model.pth", "0.weight", "1.bias", "extra.weight"))
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    good, sd2 = _small()
    fresh = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    load_state_dict_strict(fresh, sd2)
    assert all(torch.equal(v, sd2[k]) for k, v in fresh.state_dict().items())


def test_optimizer_count_mismatch_is_a_clear_error_and_model_untouched():
    ckpt = read_checkpoint(_need(G_800))
    model = module_from_state_dict(ckpt["model"])
    model.add_module("emb_vol", nn.Linear(1, 2))  # e.g. a vol_embedding config vs a plain base
    with pytest.raises(CheckpointError, match=r"G_800\.pth does not match the model: optimizer has 753 "
                                              r"tensors, checkpoint 751"):
        load_checkpoint(G_800, model, adamw(model))
    assert all(bool((p == 0).all()) for n, p in model.named_parameters() if not n.startswith("emb_vol"))
    # skip_optimizer loads the weights and leaves the optimizer alone
    opt = adamw(model)
    load_checkpoint(G_800, model, opt, skip_optimizer=True)
    assert torch.equal(model.emb_g.weight, ckpt["model"]["emb_g.weight"]) and not opt.state


def test_optimizer_shape_mismatch_names_the_parameter():
    ckpt = read_checkpoint(_need(G_800))
    sd = dict(ckpt["model"])
    sd["pre.weight"] = torch.zeros(sd["pre.weight"].shape[0], 256, sd["pre.weight"].shape[2])
    model = module_from_state_dict(sd)  # 256-dim config against a 768-dim base: counts agree
    with pytest.raises(CheckpointError, match=r"optimizer state of pre\.weight has shape"):
        load_checkpoint(G_800, model, adamw(model))


# ---------------------------------------------------------------------------------------------
# weight norm names and DDP prefix
# ---------------------------------------------------------------------------------------------
def test_parametrized_weight_norm_reads_and_writes_legacy_names(tmp_path):
    sd = read_checkpoint(_need(G_800))["model"]
    g, v, b = (sd[f"dec.conv_pre.{n}"] for n in ("weight_g", "weight_v", "bias"))
    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(v.shape[1], v.shape[0], v.shape[2]))
    model = nn.Module()
    model.add_module("conv_pre", conv)
    load_state_dict_strict(model, {"conv_pre.weight_g": g, "conv_pre.weight_v": v, "conv_pre.bias": b})
    assert torch.equal(conv.parametrizations.weight.original0, g)
    assert torch.equal(conv.parametrizations.weight.original1, v)
    save_checkpoint(model, None, 1e-4, 1, tmp_path / "G_1.pth")
    saved = safe_torch_load(tmp_path / "G_1.pth")["model"]
    assert list(saved) == ["conv_pre.bias", "conv_pre.weight_g", "conv_pre.weight_v"]
    assert torch.equal(saved["conv_pre.weight_g"], g) and torch.equal(saved["conv_pre.weight_v"], v)
    # a parametrized model loads a legacy-named checkpoint back, through load_checkpoint too
    twin = nn.Module()
    twin.add_module("conv_pre", nn.utils.parametrizations.weight_norm(nn.Conv1d(v.shape[1], v.shape[0], v.shape[2])))
    report = load_model_state(twin, saved)
    assert report.complete and torch.equal(twin.conv_pre.parametrizations.weight.original1, v)


def test_legacy_weight_norm_module_and_ddp_prefix(tmp_path):
    with pytest.warns(FutureWarning):
        conv = nn.utils.weight_norm(nn.Conv1d(2, 3, 5))
    wrapped = nn.DataParallel(nn.Sequential(conv))  # has .module like DDP; state keys gain "module."
    assert all(k.startswith("module.") for k in wrapped.state_dict())
    save_checkpoint(wrapped, None, 1e-4, 2, tmp_path / "G_5.pth")
    saved = read_checkpoint(tmp_path / "G_5.pth")
    assert list(saved["model"]) == ["0.bias", "0.weight_g", "0.weight_v"]
    assert saved["optimizer"] is None and saved["iteration"] == 2
    with pytest.warns(FutureWarning):
        other = nn.Sequential(nn.utils.weight_norm(nn.Conv1d(2, 3, 5)))
    load_checkpoint(tmp_path / "G_5.pth", other, adamw(other))  # file optimizer None: skipped
    assert torch.equal(other[0].weight_v, conv.weight_v)


# ---------------------------------------------------------------------------------------------
# atomic save
# ---------------------------------------------------------------------------------------------
def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch):
    model, _ = _small()
    path = tmp_path / "G_100.pth"
    save_checkpoint(model, adamw(model), 1e-4, 1, path)
    before = path.read_bytes()

    def broken_save(obj, f):  # noqa: ANN001 - test double of torch.save(payload, file)
        f.write(b"PK\x03\x04 half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, adamw(model), 1e-4, 2, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["G_100.pth"]


# ---------------------------------------------------------------------------------------------
# safe loading
# ---------------------------------------------------------------------------------------------
class _Payload:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_checkpoint_is_refused_not_executed(tmp_path, writer):
    marker = tmp_path / "PWNED"
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / "G_666.pth"
    if writer == "torch":
        torch.save({"model": payload, "iteration": 1, "optimizer": None, "learning_rate": 1.0}, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_torch_load(path)
    assert str(path) in str(err.value) and "refused" in str(err.value) and "executed" in str(err.value)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path, nn.Linear(1, 1))
    assert not marker.exists()


def test_bad_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"a": torch.zeros(100)}, good)
    data = good.read_bytes()
    cases = {"trunc.pth": data[: len(data) // 2], "empty.pth": b"", "text.pth": b"hello world\n"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=name) as err:
            safe_torch_load(tmp_path / name)
        assert not isinstance(err.value, UnsafeCheckpointError)
    with pytest.raises(FileNotFoundError, match="nope.pth not found"):
        safe_torch_load(tmp_path / "nope.pth")
    with pytest.raises(CheckpointNotFoundError):
        load_checkpoint(tmp_path / "nope.pth", nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match="lacks model, iteration, optimizer, learning_rate"):
        read_checkpoint(good)


def test_numpy_arrays_only_when_allowed():
    path = _need(FIXTURES / "cluster" / "kmeans_8.pt")
    with pytest.raises(UnsafeCheckpointError, match="numpy"):
        safe_torch_load(path)
    km = safe_torch_load(path, allow_numpy=True)
    centers = km["spk_a"]["cluster_centers_"]
    assert isinstance(centers, np.ndarray) and centers.shape == (8, 768) and centers.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# finding and pruning checkpoints
# ---------------------------------------------------------------------------------------------
def _touch(folder, names):
    for i, name in enumerate(names):
        p = folder / name
        p.write_bytes(b"x")
        os.utime(p, (1000 - i, 1000 - i))  # older steps get newer mtimes: sorting must use the step


def test_latest_checkpoint_path_uses_the_step_only(tmp_path):
    run = tmp_path / "run99999"
    run.mkdir()
    _touch(run, ["G_0.pth", "G_800.pth", "G_1600.pth", "G_800_copy2.pth", "G_latest.pth", "G_99999.pth.bak",
                 "D_0.pth", "D_2400.pth", "D_800.pth"])
    assert latest_checkpoint_path(run) == str(run / "G_1600.pth")
    assert latest_checkpoint_path(run, "D_*.pth") == str(run / "D_2400.pth")
    assert checkpoint_steps(run, "D_*.pth") == [(0, "D_0.pth"), (800, "D_800.pth"), (2400, "D_2400.pth")]
    with pytest.raises(CheckpointNotFoundError, match="model_<step>.pt"):
        latest_checkpoint_path(run, "model_*.pt")
    with pytest.raises(ValueError, match="exactly one"):
        checkpoint_steps(run, "G_*_*.pth")


def test_clean_checkpoints_keeps_newest_steps_and_step_zero(tmp_path):
    steps = [0, 800, 1600, 2400, 3200, 4000]
    others = ["G_800_copy.pth", "Generated.txt", "D_notes.pth", "G_1.pth.tmp", "config.json"]
    _touch(tmp_path, [f"G_{s}.pth" for s in steps] + [f"D_{s}.pth" for s in steps] + others)
    deleted = clean_checkpoints(tmp_path, n_ckpts_to_keep=2)
    assert sorted(os.path.basename(p) for p in deleted) == sorted(
        [f"{x}_{s}.pth" for x in "GD" for s in (800, 1600, 2400)])
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{x}_{s}.pth" for x in "GD" for s in (0, 3200, 4000)] + others)
    assert clean_checkpoints(tmp_path, 0) == [] and clean_checkpoints(tmp_path, 2) == []
