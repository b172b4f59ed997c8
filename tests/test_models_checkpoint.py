"""SynthesizerTrn checkpoints in the 4.1 layout: load, save, round trip, release files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES, zeroed_rng
from models import SynthesizerTrn
from core.checkpoint import load_checkpoint, safe_torch_load, save_checkpoint
from core.config import HParams
from generator import build_synthesizer

BASE = FIXTURES / "synth" / "base_vec768"


def _net_and_optim(folder):
    cfg = json.loads((folder / "config.json").read_text())
    net = build_synthesizer(HParams(cfg))
    train = cfg["train"]
    optim = torch.optim.AdamW(net.parameters(), train["learning_rate"], betas=train["betas"], eps=train["eps"])
    return net, optim, cfg


@pytest.fixture(scope="module")
def base_fixture():
    if not (BASE / "G_800.pth").exists():
        pytest.skip("base_vec768 fixture not available")
    with np.load(BASE / "fixture.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_round_trip_keeps_4_1_layout_and_tensors(tmp_path, base_fixture) -> None:
    net, optim, _ = _net_and_optim(BASE)
    _, _, lr, iteration = load_checkpoint(str(BASE / "G_800.pth"), net, optim)
    original = safe_torch_load(BASE / "G_800.pth")
    assert iteration == original["iteration"] == 3 and lr == original["learning_rate"]

    out = tmp_path / "G_800.pth"
    save_checkpoint(net, optim, lr, iteration, str(out))
    saved = safe_torch_load(out)
    assert list(saved) == ["model", "iteration", "optimizer", "learning_rate"]
    assert saved["iteration"] == original["iteration"] and saved["learning_rate"] == original["learning_rate"]
    assert list(saved["model"]) == list(original["model"])
    for key, tensor in original["model"].items():
        assert saved["model"][key].dtype == tensor.dtype
        assert torch.equal(saved["model"][key], tensor), key
    opt_a, opt_b = original["optimizer"], saved["optimizer"]
    assert opt_a["param_groups"][0]["params"] == opt_b["param_groups"][0]["params"]
    assert sorted(opt_a["state"]) == sorted(opt_b["state"])
    for idx, state in opt_a["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[name], opt_b["state"][idx][name])


def test_4_1_checkpoint_reproduces_audio_through_load_checkpoint(base_fixture) -> None:
    net, _, _ = _net_and_optim(BASE)
    load_checkpoint(str(BASE / "G_800.pth"), net, None, skip_optimizer=True)
    net.eval()
    a = base_fixture
    with zeroed_rng():
        audio, _ = net.infer(torch.from_numpy(a["in_c"]), torch.from_numpy(a["in_f0"]),
                             torch.from_numpy(a["in_uv"]), g=torch.from_numpy(a["in_sid"]))
    assert float((audio - torch.from_numpy(a["zn_audio"])).abs().max()) <= 1e-4


@pytest.mark.parametrize("name, expected_key", [("G_800_release.pth", "zn_audio"),
                                                  ("G_800_release_half.pth", "half_release_zn_audio")])
def test_release_files(name: str, expected_key: str, base_fixture) -> None:
    net, _, _ = _net_and_optim(BASE)
    load_checkpoint(str(BASE / name), net, None, skip_optimizer=True)
    expected_dtype = torch.float16 if "half" in name else torch.float32
    assert next(net.parameters()).dtype == expected_dtype  # 4.1 casts to the file's dtype
    net = net.float().eval()
    a = base_fixture
    with zeroed_rng():
        audio, _ = net.infer(torch.from_numpy(a["in_c"]), torch.from_numpy(a["in_f0"]),
                             torch.from_numpy(a["in_uv"]), g=torch.from_numpy(a["in_sid"]))
    assert float((audio - torch.from_numpy(a[expected_key])).abs().max()) <= 1e-4


def test_weight_norm_folding_keeps_output(base_fixture) -> None:
    net, _, _ = _net_and_optim(BASE)
    load_checkpoint(str(BASE / "G_800.pth"), net, None, skip_optimizer=True)
    net.eval()
    a = base_fixture
    args = (torch.from_numpy(a["in_c"]), torch.from_numpy(a["in_f0"]), torch.from_numpy(a["in_uv"]))
    ref, _ = net.infer(*args, g=torch.from_numpy(a["in_sid"]))
    net.remove_weight_norm()
    assert not any(k.endswith("weight_g") for k in net.state_dict())
    folded, _ = net.infer(*args, g=torch.from_numpy(a["in_sid"]))
    assert float((ref - folded).abs().max()) <= 1e-5
