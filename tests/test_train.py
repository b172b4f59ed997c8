"""train.py end to end on CPU: a tiny model trained on the session's tutorial-prepared project.

The project (conftest `prepared_project`: tiny random-weight ContentVec with 48-dim units, dio F0) is
copied; training uses 2 of its slt clips (one batch of 2, so one step per epoch) and one short
validation clip. The So-VITS model is shrunk and the discriminator runs at `D_WIDTH` of 4.1's channels.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import train
from conftest import FIXTURES, ROOT, PreparedProject
from data_utils import TextAudioSpeakerLoader
from models import MultiPeriodDiscriminator, SynthesizerTrn
from core.checkpoint import load_model_state, read_checkpoint, safe_torch_load
from core.config import load_config
from training.loop import RunContext, Trainer, TrainingError
from training.resume import build_scheduler, restore
from core.schema import model_section
from generator import build_synthesizer

GAMMA = 0.999875
STEPS_MEL = 6
TINY_MODEL = dict(ssl_dim=48, hidden_channels=16, inter_channels=8, filter_channels=16, gin_channels=8,
                  upsample_initial_channel=128, flow_share_parameter=True, use_depthwise_conv=True,
                  vol_embedding=False)
D_WIDTH = 0.0625  # of 4.1's discriminator channels: 0.2 M values instead of 47 M


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def project(prepared_project: PreparedProject, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the prepared project with filelists/train2.txt (2 slt clips) and val1.txt (one short clip)."""
    root = prepared_project.copy_to(tmp_path_factory.mktemp("trainproj") / "project")
    lists = root / "filelists"
    slt = [p for p in lists.joinpath("train.txt").read_text(encoding="utf-8").split() if "/slt/" in p]
    assert len(slt) == 2
    lists.joinpath("train2.txt").write_text("\n".join(slt) + "\n", encoding="utf-8")
    val = [p for p in lists.joinpath("val.txt").read_text(encoding="utf-8").split() if "/slt/" in p]
    shortest = min(val, key=lambda p: os.path.getsize(root / p))
    lists.joinpath("val1.txt").write_text(shortest + "\n", encoding="utf-8")
    return root


def _config(root, name: str, **train_options) -> str:
    """configs/<name>.json: the generated config, shrunk, with the given train options."""
    data = json.loads((root / "configs" / "config.json").read_text())
    data["model"].update(TINY_MODEL)
    data["data"].update(training_files="filelists/train2.txt", validation_files="filelists/val1.txt")
    data["train"].update(batch_size=2, segment_size=2560, log_interval=1, eval_interval=1, keep_ckpts=1,
                         port=str(_free_port()), vol_aug=False, discriminator_width=D_WIDTH)
    data["train"].update(train_options)
    path = root / "configs" / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return f"configs/{name}.json"


def _train(root, monkeypatch, *args: str) -> int:
    monkeypatch.chdir(root)
    return train.main([*args, "--device", "cpu", "--num_workers", "0"])


def _files(folder) -> set[str]:
    return {p.name for p in folder.iterdir() if re.match(r"^[GD]_\d+\.pth$", p.name)}


def _steps_logged(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"Losses: \[.*?\], step: (\d+),", text)]


@pytest.fixture(scope="module")
def first_run(project):
    """A fresh 3-epoch run (steps 0, 1, 2), saving at every step and keeping one checkpoint."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        cfg = _config(project, "run", epochs=3)
        assert _train(project, monkeypatch, "-c", cfg, "-m", "run") == 0
    finally:
        monkeypatch.undo()
    return project / "logs" / "run", project / cfg


def test_fresh_run_writes_checkpoints_and_honours_keep_ckpts(first_run) -> None:
    run, cfg = first_run
    assert _files(run) == {"G_0.pth", "D_0.pth", "G_2.pth", "D_2.pth"}  # G_1/D_1 cleaned, _0 kept
    assert (run / "config.json").read_bytes() == cfg.read_bytes()
    log = (run / "train.log").read_text(encoding="utf-8")
    assert _steps_logged(log) == [0, 1, 2]
    assert re.search(r"\trun\tINFO\tTrain Epoch: 3 \[0%\]", log)
    assert re.search(r"reference_loss: [\d.]+, [\d.]+ steps/s", log)
    assert "====> Epoch: 3, cost" in log and "Free up space by deleting ckpt logs/run/G_1.pth" in log
    assert "Training on the CPU" in log
    g2 = read_checkpoint(run / "G_2.pth")
    assert g2["iteration"] == 3 and g2["learning_rate"] == 1e-4  # the epoch, and the initial lr (4.1 stores the initial lr)
    assert g2["optimizer"]["param_groups"][0]["lr"] == 1e-4 * GAMMA * GAMMA
    assert g2["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    assert "enc_q.pre.weight" in g2["model"] and "dec.conv_pre.weight_g" in g2["model"]
    assert read_checkpoint(run / "G_0.pth")["iteration"] == 1
    d2 = read_checkpoint(run / "D_2.pth")
    small = MultiPeriodDiscriminator(width=D_WIDTH).state_dict()
    assert {k: v.shape for k, v in d2["model"].items()} == {k: v.shape for k, v in small.items()}
    assert len(d2["optimizer"]["state"]) == len(d2["optimizer"]["param_groups"][0]["params"])


def test_tensorboard_tags_are_41s(first_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = first_run
    train_events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    train_events.Reload()
    tags = train_events.Tags()
    assert set(tags["scalars"]) == {"loss/g/total", "loss/d/total", "learning_rate", "grad_norm_d", "grad_norm_g",
                                    "loss/g/fm", "loss/g/mel", "loss/g/kl", "loss/g/lf0"}
    assert set(tags["images"]) == {"slice/mel_org", "slice/mel_gen", "all/mel", "all/lf0", "all/norm_lf0"}
    assert [e.step for e in train_events.Scalars("loss/g/mel")] == [0, 1, 2]
    image = train_events.Images("all/mel")[0]
    assert (image.width, image.height) == (1000, 200)  # a 10 x 2 inch figure, as in 4.1
    eval_events = EventAccumulator(str(run / "eval"), size_guidance={"audio": 0, "images": 0})
    eval_events.Reload()
    assert set(eval_events.Tags()["audio"]) == {"gen/audio_0", "gt/audio_0"}
    assert set(eval_events.Tags()["images"]) == {"gen/mel", "gt/mel"}
    assert eval_events.Audio("gen/audio_0")[0].sample_rate == 44100


def test_checkpoint_loads_in_inference(first_run, project, monkeypatch) -> None:
    run, cfg = first_run
    monkeypatch.chdir(project)
    hps = load_config(cfg)
    net = SynthesizerTrn(1025, 5, **model_section(hps.model).network_args()).eval()
    report = load_model_state(net, read_checkpoint(run / "G_2.pth")["model"], source="G_2.pth")
    assert report.complete
    c, f0, _, audio, spk, uv, _ = TextAudioSpeakerLoader(hps.data.validation_files, hps, vol_aug=False)[0]
    out, f0_used = net.infer(c[None], f0[None], uv[None], g=spk[None])
    again, _ = net.infer(c[None], f0[None], uv[None], g=spk[None])
    assert out.shape == (1, 1, c.shape[1] * 512) and torch.isfinite(out).all() and out.abs().max() > 0
    assert torch.equal(out, again) and torch.equal(f0_used, f0[None])


def test_restore_reads_41_checkpoint_with_optimizer_state(tmp_path, caplog) -> None:
    """G_800.pth was written by 4.1's trainer code (optimizer state populated)."""
    src = FIXTURES / "synth" / "base_vec768"
    if not (src / "G_800.pth").exists():
        pytest.skip("synth fixture not available")
    hps = load_config(src / "config.json")
    shutil.copy(src / "G_800.pth", tmp_path / "G_800.pth")
    net_g = build_synthesizer(hps)
    net_d = MultiPeriodDiscriminator(width=D_WIDTH)
    optim_g = torch.optim.AdamW(net_g.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)
    optim_d = torch.optim.AdamW(net_d.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)
    with caplog.at_level(logging.INFO):
        state = restore(str(tmp_path), net_g, net_d, optim_g, optim_d, 768, "vec768l12")
    saved = safe_torch_load(tmp_path / "G_800.pth")
    assert state.global_step == 801 and state.epoch == max(saved["iteration"], 1)
    assert "no D_<step>.pth; the discriminator starts from scratch" in caplog.text
    mine = optim_g.state_dict()
    assert len(mine["state"]) == len(saved["optimizer"]["state"]) > 0
    for index, moments in saved["optimizer"]["state"].items():
        assert torch.equal(mine["state"][index]["exp_avg_sq"], moments["exp_avg_sq"])
    for key, value in saved["model"].items():
        assert torch.equal(net_g.state_dict()[key], value), key
    lr = optim_g.param_groups[0]["lr"]
    build_scheduler(optim_g, GAMMA, state.epoch)
    assert optim_g.param_groups[0]["lr"] == (lr * GAMMA if state.epoch >= 2 else lr)


def test_discriminator_without_its_generator_is_not_read(tmp_path, caplog) -> None:
    """A save that died between D_<step> and G_<step> leaves a D that resume skips without loading it."""
    (tmp_path / "D_3.pth").write_bytes(b"PK\x03\x04truncated")
    with caplog.at_level(logging.INFO):
        state = restore(str(tmp_path), None, None, None, None, 768, "vec768l12")
    assert state.global_step == 0 and "step 3 is incomplete (G_3.pth is missing)" in caplog.text
    assert "unusable" not in caplog.text


def test_finetune_base_without_optimizer_skips_mismatched_tensors(tmp_path, caplog) -> None:
    """A pretrained base (no optimizer state) for another speaker count: emb_g is skipped, with a line."""
    src = FIXTURES / "synth" / "base_vec768"
    if not (src / "G_800.pth").exists():
        pytest.skip("synth fixture not available")
    base = safe_torch_load(src / "G_800.pth")
    base["optimizer"] = None
    torch.save(base, tmp_path / "G_0.pth")
    hps = load_config(src / "config.json")
    model = dict(hps.model.to_dict(), n_speakers=5)
    net_g = SynthesizerTrn(1025, 20, **model_section(model).network_args())
    optim_g = torch.optim.AdamW(net_g.parameters(), 1e-4)
    net_d = MultiPeriodDiscriminator(width=D_WIDTH)
    optim_d = torch.optim.AdamW(net_d.parameters(), 1e-4)
    with caplog.at_level(logging.INFO):
        state = restore(str(tmp_path), net_g, net_d, optim_g, optim_d, 768, "vec768l12")
    gin = base["model"]["emb_g.weight"].shape[1]
    assert (f"G_0.pth: skipped emb_g.weight (checkpoint [3, {gin}], model [5, {gin}]); it keeps its fresh "
            "initial values") in caplog.text
    assert "has no optimizer state; the optimizer starts fresh" in caplog.text
    assert state.global_step == 1 and not optim_g.state_dict()["state"]
    assert torch.equal(net_g.state_dict()["pre.weight"], base["model"]["pre.weight"])


def test_base_model_for_another_encoder_is_refused(project, monkeypatch, capsys) -> None:
    src = FIXTURES / "synth" / "base_vec768" / "G_800.pth"
    if not src.exists():
        pytest.skip("synth fixture not available")
    base = project / "logs" / "base"
    base.mkdir(parents=True)
    shutil.copy(src, base / "G_0.pth")
    assert _train(project, monkeypatch, "-c", _config(project, "base", epochs=1), "-m", "base") == 1
    out = capsys.readouterr().out
    assert "G_0.pth takes 768-dim units but the config (speech_encoder vec768l12) says model.ssl_dim = 48" in out
    assert "vec768l12 / dphubert" in out and "Use the pretrained base model made for vec768l12" in out
    assert "Traceback" not in out and _files(base) == {"G_0.pth"}


def test_empty_training_list_is_a_clear_error(project, monkeypatch, capsys) -> None:
    (project / "filelists" / "empty.txt").write_text("\n")
    cfg = _config(project, "empty", epochs=1)
    data = json.loads((project / cfg).read_text())
    data["data"]["training_files"] = "filelists/empty.txt"
    (project / cfg).write_text(json.dumps(data))
    assert _train(project, monkeypatch, "-c", cfg, "-m", "empty") == 1
    assert "filelists/empty.txt lists no clips" in capsys.readouterr().out


def test_mel_loss_falls_over_a_short_fixed_seed_run(project, monkeypatch) -> None:
    """Re-seeding before every step trains on the same decoder windows, so the mel loss falls steadily."""
    monkeypatch.chdir(project)
    hps = load_config(_config(project, "mel", epochs=1, learning_rate=1e-3))
    torch.manual_seed(7)
    trainer = Trainer(hps, "logs/mel", RunContext(0, 1, torch.device("cpu"), 0, lambda: False))
    batch = next(iter(trainer.train_loader))
    mel = []
    for _ in range(STEPS_MEL):
        torch.manual_seed(0)
        mel.append(float(trainer.train_step(batch, log=False)["mel"]))
    assert all(b < a for a, b in zip(mel, mel[1:])) and mel[-1] < 0.85 * mel[0], mel


@pytest.fixture(scope="module")
def stopped_run(project):
    """`train.py` as a user runs it, stopped with Ctrl+C (SIGINT) after its second step."""
    cfg = _config(project, "sig", epochs=1000, eval_interval=1000)
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONIOENCODING="utf-8")
    cmd = [sys.executable, str(ROOT / "train.py"), "-c", cfg, "-m", "sig", "--device", "cpu", "--num_workers", "0"]
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, encoding="utf-8")
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "step: 1," in line or time.monotonic() > deadline:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + rest


@pytest.mark.slow
def test_sigint_saves_the_last_step(stopped_run, project) -> None:
    code, text = stopped_run
    assert code == 128 + signal.SIGINT, text
    last = max(_steps_logged(text))
    assert last >= 1 and f"Stopped after step {last}; checkpoint saved" in text
    run = project / "logs" / "sig"
    assert _files(run) == {"G_0.pth", "D_0.pth", f"G_{last}.pth", f"D_{last}.pth"}
    # One step per epoch: the stop is seen when epoch last + 2 fetches its batch, so that epoch is
    # stored and nothing is repeated on resume.
    assert read_checkpoint(run / f"G_{last}.pth")["iteration"] == last + 2
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_rerun_continues_at_next_step_with_saved_optimizer(stopped_run, project, monkeypatch, caplog) -> None:
    _, text = stopped_run
    last = max(_steps_logged(text))
    run = project / "logs" / "sig"
    monkeypatch.chdir(project)
    hps = load_config(_config(project, "sig2", epochs=last + 3, eval_interval=1000))
    saved_g, saved_d = read_checkpoint(run / f"G_{last}.pth"), read_checkpoint(run / f"D_{last}.pth")
    trainer = Trainer(hps, "logs/sig", RunContext(0, 1, torch.device("cpu"), 0, lambda: False))
    # Training goes on exactly where it stopped: the stored epoch and batch, the step after the saved one.
    assert (trainer.state.epoch, trainer.state.batch, trainer.global_step) == (last + 2, 0, last + 1)
    assert trainer.state.exact
    for optimizer, saved in ((trainer.optim_g, saved_g), (trainer.optim_d, saved_d)):
        state = optimizer.state_dict()
        assert len(state["state"]) == len(saved["optimizer"]["state"]) > 0
        for index, moments in saved["optimizer"]["state"].items():
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(state["state"][index][key], moments[key]), (index, key)
        # No extra decay: the saved rate is the one the uninterrupted run would use (4.1 decayed it again).
        assert state["param_groups"][0]["lr"] == saved["optimizer"]["param_groups"][0]["lr"]
    with caplog.at_level(logging.INFO):
        assert trainer.fit() is False
    assert _steps_logged(caplog.text) == [last + 1, last + 2]
    # The end of the last epoch saves too, so the finished steps are not lost.
    assert f"G_{last + 2}.pth" in _files(run)

    def out_of_memory(*_: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "train_step", out_of_memory)
    with pytest.raises(TrainingError, match=r"Lower train\.batch_size \(now 2\) or train\.segment_size"):
        trainer.train_epoch(last + 3)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(project, monkeypatch) -> None:
    cfg = _config(project, "ddp", epochs=1, batch_size=1)
    assert _train(project, monkeypatch, "-c", cfg, "-m", "ddp", "--nprocs", "2") == 0
    run = project / "logs" / "ddp"
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "2 processes on cpu (gloo)" in log
    # Each process trains on its own clip of the two: one step in the epoch, saved once by rank 0.
    assert _steps_logged(log) == [0] and "====> Epoch: 1" in log
    assert _files(run) == {"G_0.pth", "D_0.pth"}
    assert read_checkpoint(run / "G_0.pth")["iteration"] == 1


def test_discriminator_width() -> None:
    """Width 1.0 is 4.1's discriminator key for key; a narrow one keeps the names and the score shapes."""
    path = FIXTURES / "manifests" / "multi_period_discriminator.json"
    if not path.exists():
        pytest.skip(f"{path} not available")
    manifest = json.loads(path.read_text())
    expected = {e["key"]: e["shape"] for e in manifest["state_dict"]}
    full = MultiPeriodDiscriminator(width=1.0).state_dict()
    assert list(full) == list(expected) and all(list(full[k].shape) == shape for k, shape in expected.items())
    y = torch.randn(1, 1, 10240)
    for width in (0.5, D_WIDTH, 0.01):
        narrow = MultiPeriodDiscriminator(width=width)
        assert list(narrow.state_dict()) == list(expected)
        with torch.no_grad():
            y_d_r, y_d_g, fmap_r, _ = narrow(y, y)
        assert [list(t.shape) for t in y_d_r] == manifest["forward_shapes_for_input_1x1x10240"]["y_d_r"]
        assert all(torch.equal(a, b) for a, b in zip(y_d_r, y_d_g))
    assert sum(p.numel() for p in MultiPeriodDiscriminator(width=D_WIDTH).parameters()) < 0.01 * sum(
        v.numel() for v in full.values())
    with pytest.raises(ValueError, match="width must be > 0"):
        MultiPeriodDiscriminator(width=0)
