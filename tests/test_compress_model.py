"""compress_model.py / export.release release files against 4.1's (synth/base_vec768 release_files),
their use by inference, and the refusal to resume training from them (training/resume.py)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import compress_model
from conftest import DATA, FIXTURES, VENCODER_FIXTURES, load_fixture, zeroed_rng
from generator import load_generator
from core.checkpoint import safe_torch_load
from core.config import load_config
from core.checkpoint import ReleaseCheckpointError
from export.release import default_release_path
from training.resume import restore
from core.config import HParams
from generator import build_synthesizer

BASE = FIXTURES / "synth" / "base_vec768"
SHARED = FIXTURES / "synth" / "tiny_depthwise_shared"
AUDIO_TOL = 1e-4  # README_synth tolerance for audio


def _need(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            pytest.skip(f"{path} not available")


@pytest.fixture(scope="module")
def made(tmp_path_factory, single_thread) -> Path:
    """G_800.pth compressed by main() twice (float32 and --half) into a scratch folder."""
    _need(BASE / "G_800.pth")
    folder = tmp_path_factory.mktemp("compress")
    shutil.copy(BASE / "G_800.pth", folder / "G_800.pth")
    config = str(BASE / "config.json")
    assert compress_model.main(["-c", config, "-i", str(folder / "G_800.pth")]) == 0
    assert compress_model.main(["-c", config, "-i", str(folder / "G_800.pth"), "-hf"]) == 0
    return folder


@pytest.fixture(scope="module")
def full(made: Path) -> dict:
    """G_800.pth as stored (reading its 3000 tensors weights-only takes a second: read once)."""
    return safe_torch_load(BASE / "G_800.pth")


@pytest.fixture(scope="module")
def light(full: dict, tmp_path_factory) -> Path:
    """G_800's weights (enc_q included) with a fresh optimizer state: a full G file that loads fast."""
    path = tmp_path_factory.mktemp("light") / "G_800.pth"
    torch.save(dict(full, optimizer=safe_torch_load(BASE / "G_800_release.pth")["optimizer"]), path)
    return path


def _infer(model_path: Path, folder: Path, arrays: dict) -> tuple[torch.Tensor, torch.dtype]:
    """Zeroed-RNG audio of `model_path` loaded the way inference loads it (CPU)."""
    loaded = load_generator(model_path, load_config(folder / "config.json"), folder / "config.json", torch.device("cpu"))
    with torch.no_grad(), zeroed_rng():
        audio, _ = loaded.net.infer(torch.from_numpy(arrays["in_c"]), torch.from_numpy(arrays["in_f0"]),
                                      torch.from_numpy(arrays["in_uv"]), g=torch.from_numpy(arrays["in_sid"]))
    return audio, next(loaded.net.parameters()).dtype


# -- layout against the 4.1 release files ------------------------------------------------------------
@pytest.mark.parametrize("name", ["G_800_release.pth", "G_800_release_half.pth"])
def test_release_file_equals_4_1s(made: Path, full: dict, name: str) -> None:
    meta, _ = load_fixture("synth/base_vec768")
    info = meta["release_files"][name]
    ours, theirs = safe_torch_load(made / name), safe_torch_load(BASE / name)
    assert list(ours) == list(theirs) == ["model", "iteration", "optimizer", "learning_rate"]
    assert ours["iteration"] == theirs["iteration"] == info["iteration"] == 0
    assert ours["learning_rate"] == theirs["learning_rate"] == info["learning_rate"] == 0.0001
    assert list(ours["model"]) == list(theirs["model"]) == [k for k in full["model"] if "enc_q" not in k]
    assert len(ours["model"]) == info["num_model_keys"] == 648
    want = torch.float16 if "half" in name else torch.float32
    for key, tensor in theirs["model"].items():
        assert ours["model"][key].dtype == tensor.dtype == want, key
        assert torch.equal(ours["model"][key], tensor), key
    assert ours["optimizer"] == theirs["optimizer"]  # empty state, one group: lr, betas, eps, wd 0.01, ...
    group = ours["optimizer"]["param_groups"][0]
    assert ours["optimizer"]["state"] == {} and len(ours["optimizer"]["param_groups"]) == 1
    assert group["params"] == list(range(info["optimizer_param_indices"]))  # enc_q counted too
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (0.0001, (0.8, 0.99), 1e-9, 0.01)


def test_release_sizes_and_no_leftovers(made: Path) -> None:
    full = os.path.getsize(made / "G_800.pth")
    release, half = os.path.getsize(made / "G_800_release.pth"), os.path.getsize(made / "G_800_release_half.pth")
    assert release < 0.45 * full and half < 0.65 * release
    assert sorted(os.listdir(made)) == ["G_800.pth", "G_800_release.pth", "G_800_release_half.pth"]


def test_default_output_names() -> None:
    assert default_release_path("logs/44k/G_30400.pth", False) == "logs/44k/G_30400_release.pth"
    assert default_release_path("logs/44k/G_30400.pth", True) == "logs/44k/G_30400_release_half.pth"
    assert default_release_path("a/G_1_release.pt", True) == "a/G_1_release_half.pt"


# -- inference loads it unchanged ------------------------------------------------------------------
def test_release_reproduces_full_checkpoint_audio(made: Path) -> None:
    _, arrays = load_fixture("synth/base_vec768")
    full, _ = _infer(BASE / "G_800.pth", BASE, arrays)
    release, dtype = _infer(made / "G_800_release.pth", BASE, arrays)
    assert dtype == torch.float32
    assert torch.equal(release, full)  # enc_q is not used by infer
    assert float((release - torch.from_numpy(arrays["zn_audio"])).abs().max()) <= AUDIO_TOL


def test_half_release_runs_in_float32_on_cpu(made: Path) -> None:
    """The fp16 file becomes a float32 model on the CPU, fed fp16-rounded weights."""
    _, arrays = load_fixture("synth/base_vec768")
    audio, dtype = _infer(made / "G_800_release_half.pth", BASE, arrays)
    assert dtype == torch.float32
    assert float((audio - torch.from_numpy(arrays["half_release_zn_audio"])).abs().max()) <= AUDIO_TOL
    assert float((audio - torch.from_numpy(arrays["zn_audio"])).abs().max()) > AUDIO_TOL  # really fp16 weights


def test_shared_flow_model_keeps_aliases_and_audio(tmp_path, single_thread) -> None:
    """flow_share_parameter: flow.wn.* and flow.flows.{0,2,4,6}.enc.* are one tensor; the optimizer
    counts it once (fewer indices than keys)."""
    _need(SHARED / "G_0.pth")
    _, arrays = load_fixture("synth/tiny_depthwise_shared")
    shutil.copy(SHARED / "G_0.pth", tmp_path / "G_0.pth")
    shutil.copy(SHARED / "config.json", tmp_path / "config.json")
    for half in ([], ["--half"]):
        assert compress_model.main(["-c", str(tmp_path / "config.json"), "-i", str(tmp_path / "G_0.pth"), *half]) == 0
    full = safe_torch_load(SHARED / "G_0.pth")
    for name in ("G_0_release.pth", "G_0_release_half.pth"):
        out = safe_torch_load(tmp_path / name)
        assert list(out["model"]) == [k for k in full["model"] if "enc_q" not in k]
        assert out["optimizer"]["param_groups"][0]["params"] == full["optimizer"]["param_groups"][0]["params"]
        wn = [k for k in out["model"] if k.startswith("flow.wn.")]
        assert wn and all(out["model"][k].data_ptr() == out["model"][k.replace("flow.wn.", "flow.flows.2.enc.")]
                          .data_ptr() for k in wn)
    audio, _ = _infer(tmp_path / "G_0_release.pth", tmp_path, arrays)
    assert float((audio - torch.from_numpy(arrays["zn_audio"])).abs().max()) <= AUDIO_TOL


def test_svc_loads_release_files(made: Path, tmp_path) -> None:
    """Svc end to end (48-dim tiny ContentVec): the release converts exactly like the full file."""
    from inference.infer_tool import InferOptions, Svc
    from core.checkpoint import load_model_state, read_checkpoint, save_checkpoint

    import soundfile as sf

    _need(VENCODER_FIXTURES / "contentvec_reduced.pt", DATA / "source" / "ked_src01.wav")
    (tmp_path / "pretrain").mkdir()
    shutil.copy(VENCODER_FIXTURES / "contentvec_reduced.pt", tmp_path / "pretrain/checkpoint_best_legacy_500.pt")
    cfg = json.loads((BASE / "config.json").read_text())
    cfg["model"]["ssl_dim"] = 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    net = build_synthesizer(HParams(cfg))
    state = dict(read_checkpoint(BASE / "G_800.pth")["model"])
    state["pre.weight"] = state["pre.weight"][:, :48] * 4.0
    load_model_state(net, state)
    save_checkpoint(net, None, 1e-4, 1, tmp_path / "G_1.pth")
    assert compress_model.main(["-c", str(tmp_path / "config.json"), "-i", str(tmp_path / "G_1.pth")]) == 0
    src, sr = sf.read(DATA / "source" / "ked_src01.wav", dtype="float32")
    wav = src[sr:2 * sr]
    outs = {}
    for name in ("G_1.pth", "G_1_release.pth"):
        svc = Svc(tmp_path / name, tmp_path / "config.json", "cpu", cluster_model_path="",
                  pretrain_dir=tmp_path / "pretrain")
        assert svc.dtype == torch.float32
        outs[name], _ = svc.convert_piece(wav, "speaker1", InferOptions())
    assert torch.equal(outs["G_1.pth"], outs["G_1_release.pth"]) and float(outs["G_1.pth"].abs().max()) > 0.05


# -- refusals -------------------------------------------------------------------------------------
def _run(capsys, *argv: str) -> tuple[int, str]:
    code = compress_model.main(list(argv))
    return code, capsys.readouterr().err


def test_already_compressed_is_refused(made: Path, tmp_path, capsys) -> None:
    config = str(BASE / "config.json")
    for name in ("G_800_release.pth", "G_800_release_half.pth"):
        shutil.copy(made / name, tmp_path / name)
    code, err = _run(capsys, "-c", config, "-i", str(tmp_path / "G_800_release.pth"))
    assert code == 2 and "G_800_release.pth is already a release file" in err and "-hf/--half" in err
    code, err = _run(capsys, "-c", config, "-i", str(tmp_path / "G_800_release_half.pth"), "-hf")
    assert code == 2 and "already an fp16 release" in err
    assert sorted(os.listdir(tmp_path)) == ["G_800_release.pth", "G_800_release_half.pth"]
    # float32 release + --half is the one allowed re-run: same result as compressing the full file.
    assert compress_model.main(["-c", config, "-i", str(tmp_path / "G_800_release.pth"), "-hf",
                                "-o", str(tmp_path / "again.pth")]) == 0
    again, ref = safe_torch_load(tmp_path / "again.pth"), safe_torch_load(BASE / "G_800_release_half.pth")
    assert list(again["model"]) == list(ref["model"]) and again["optimizer"] == ref["optimizer"]
    assert all(torch.equal(again["model"][k], v) for k, v in ref["model"].items())


def test_missing_files_and_mismatched_config(light: Path, tmp_path, capsys) -> None:
    config, full = str(BASE / "config.json"), str(light)
    code, err = _run(capsys, "-c", config, "-i", str(tmp_path / "G_9.pth"))
    assert code == 2 and f"input checkpoint {tmp_path / 'G_9.pth'} not found" in err
    code, err = _run(capsys, "-c", str(tmp_path / "nope.json"), "-i", full)
    assert code == 2 and f"{tmp_path / 'nope.json'} not found" in err
    code, err = _run(capsys, "-c", config)
    assert code == 2 and "-i/--input" in err

    cfg = json.loads((BASE / "config.json").read_text())
    cfg["model"]["ssl_dim"] = 256
    (tmp_path / "c256.json").write_text(json.dumps(cfg))
    code, err = _run(capsys, "-c", str(tmp_path / "c256.json"), "-i", full, "-o", str(tmp_path / "x.pth"))
    assert code == 2 and f"{full} does not fit {tmp_path / 'c256.json'} (check model.ssl_dim)" in err
    assert "pre.weight [20, 768, 5]" in err and "[20, 256, 5]" in err

    cfg["model"].update(ssl_dim=768, n_speakers=2)
    cfg["spk"] = {"a": 0, "b": 1}
    (tmp_path / "c2.json").write_text(json.dumps(cfg))
    code, err = _run(capsys, "-c", str(tmp_path / "c2.json"), "-i", full, "-o", str(tmp_path / "x.pth"))
    assert code == 2 and f"{full} has 3 speakers x 16 embedding channels but" in err
    assert "model.n_speakers = 2, model.gin_channels = 16" in err and "(check model.n_speakers / model.gin_channels)" in err
    assert not (tmp_path / "x.pth").exists()


def test_output_over_input_is_refused(light: Path, tmp_path, capsys) -> None:
    shutil.copy(light, tmp_path / "G_800.pth")
    before = (tmp_path / "G_800.pth").read_bytes()
    code, err = _run(capsys, "-c", str(BASE / "config.json"), "-i", str(tmp_path / "G_800.pth"),
                     "-o", str(tmp_path / "." / "G_800.pth"))
    assert code == 2 and "refusing to overwrite the input" in err
    assert (tmp_path / "G_800.pth").read_bytes() == before and os.listdir(tmp_path) == ["G_800.pth"]


def test_discriminator_file_is_not_a_generator(tmp_path, capsys) -> None:
    torch.save({"model": {"convs.0.weight": torch.zeros(2)}, "iteration": 1, "optimizer": None,
                "learning_rate": 1e-4}, tmp_path / "D_1.pth")
    code, err = _run(capsys, "-c", str(BASE / "config.json"), "-i", str(tmp_path / "D_1.pth"))
    assert code == 2 and "not a So-VITS generator checkpoint" in err


# -- training refuses to resume from a release file ---------------------------------------------------
@pytest.mark.parametrize("name, as_name", [("G_800_release.pth", "G_800.pth"), ("G_800_release_half.pth", "G_0.pth")])
def test_resume_from_release_is_refused(made: Path, full: dict, tmp_path, name: str, as_name: str) -> None:

    hps = load_config(BASE / "config.json")
    shutil.copy(made / name, tmp_path / as_name)
    net_g, net_d = build_synthesizer(hps), nn.Linear(1, 1)
    optim_g, optim_d = torch.optim.AdamW(net_g.parameters(), 1e-4), torch.optim.AdamW(net_d.parameters(), 1e-4)
    with pytest.raises(ReleaseCheckpointError) as info:
        restore(str(tmp_path), net_g, net_d, optim_g, optim_d, 768, "vec768l12")
    message = str(info.value)
    assert f"{tmp_path / as_name} is an inference-only release file" in message
    assert "cannot resume" in message and "G_<step>.pth written by train.py" in message
    assert not optim_g.state_dict()["state"]
    if as_name == "G_0.pth":
        return
    # The full checkpoint in its place resumes (with its optimizer moments).
    shutil.copy(BASE / "G_800.pth", tmp_path / as_name)
    state = restore(str(tmp_path), net_g, net_d, optim_g, optim_d, 768, "vec768l12")
    assert state.g_path == str(tmp_path / as_name) and len(optim_g.state_dict()["state"]) == 751
    assert torch.equal(net_g.state_dict()["enc_q.proj.bias"], full["model"]["enc_q.proj.bias"])
