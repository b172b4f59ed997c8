"""Lost-work faults of train.py: interrupted saves, two trainers on one folder, refused runs and the
run config, exact resume, a full disk, and kill -9 at random moments."""
from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import train
from conftest import ROOT, PreparedProject
from core.checkpoint import read_checkpoint
from core.lock import folder_lock

TINY_MODEL = dict(ssl_dim=48, hidden_channels=16, inter_channels=8, filter_channels=16, gin_channels=8,
                  upsample_initial_channel=128, flow_share_parameter=True, use_depthwise_conv=True,
                  vol_embedding=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def project(prepared_project: PreparedProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = prepared_project.copy_to(tmp_path_factory.mktemp("faults") / "project")
    slt = [p for p in (root / "filelists/train.txt").read_text(encoding="utf-8").split() if "/slt/" in p]
    (root / "filelists/two.txt").write_text("\n".join(slt[:2]) + "\n", encoding="utf-8")
    return root


def _config(root: Path, name: str, **train_options) -> str:
    data = json.loads((root / "configs/config.json").read_text())
    data["model"].update(TINY_MODEL)
    data["data"].update(training_files="filelists/two.txt", validation_files="filelists/none.txt")
    data["train"].update(batch_size=1, segment_size=2560, log_interval=1, eval_interval=100, keep_ckpts=0,
                         port=str(_free_port()), vol_aug=False, discriminator_width=0.0625, epochs=2)
    data["train"].update(train_options)
    (root / "configs" / f"{name}.json").write_text(json.dumps(data, indent=2))
    return f"configs/{name}.json"


def _train(root: Path, monkeypatch: pytest.MonkeyPatch, config: str, model: str) -> int:
    monkeypatch.chdir(root)
    return train.main(["-c", config, "-m", model, "--device", "cpu", "--num_workers", "0"])


def _steps(folder: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"G": [], "D": []}
    for p in folder.iterdir():
        m = re.match(r"^([GD])_(\d+)\.pth$", p.name)
        if m:
            found[m.group(1)].append(int(m.group(2)))
    return {k: sorted(v) for k, v in found.items()}


def _stop_after(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the trainer see a stop request once `step` is done, as Ctrl+C would."""
    from training.loop import Trainer

    real = Trainer._sync_flags

    def flags(self, no_batch: bool) -> tuple[bool, bool]:
        stop, skip = real(self, no_batch)
        return stop or self.global_step > step, skip

    monkeypatch.setattr(Trainer, "_sync_flags", flags)


def test_resume_is_exact_step_for_step(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted inside an epoch and resumed = uninterrupted: same steps, same weights, bit for bit."""
    config = _config(project, "exact")
    assert _train(project, monkeypatch, config, "whole") == 0
    with monkeypatch.context() as patch:
        _stop_after(patch, 0)  # 2 clips, batch 1: stops inside epoch 1
        assert _train(project, patch, config, "parts") == 0
    assert _steps(project / "logs/parts")["G"] == [0]
    assert _train(project, monkeypatch, config, "parts") == 0
    assert _steps(project / "logs/whole")["G"][-1] == _steps(project / "logs/parts")["G"][-1] == 3
    a, b = read_checkpoint(project / "logs/whole/G_3.pth"), read_checkpoint(project / "logs/parts/G_3.pth")
    assert a["iteration"] == b["iteration"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_incomplete_step_is_skipped_and_temps_removed(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    config = _config(project, "pairs", epochs=1)
    assert _train(project, monkeypatch, config, "pairs") == 0
    run = project / "logs/pairs"
    assert _steps(run) == {"G": [0, 1], "D": [0, 1]}
    # A later save died: G_5 written, D_5 never finished (its temp file left behind).
    (run / "G_5.pth").write_bytes((run / "G_1.pth").read_bytes())
    (run / ".D_5.pth.abc123.tmp").write_bytes(b"\0" * 1000)
    (run / "D_6.pth").write_bytes(b"PK\x03\x04truncated")
    (run / "G_6.pth").write_bytes((run / "G_1.pth").read_bytes())
    config = _config(project, "pairs", epochs=2)
    with caplog.at_level("INFO"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _train(project, monkeypatch, config, "pairs") == 0
    # Epoch 1 resumes at its end: its schedule step comes before any optimizer step, which is expected here.
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    text = caplog.text
    assert "step 6 is unusable" in text and "D_6.pth" in text
    assert "step 5 is incomplete (D_5.pth is missing)" in text
    assert "Resuming after step 1 (epoch 1, batch 2)" in text
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert "removed 1 temporary file(s) left by an interrupted save" in text


def test_second_trainer_on_a_folder_is_refused(project: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    config = _config(project, "locked", epochs=1)
    with folder_lock(project / "logs/locked", "train.py"):
        assert _train(project, monkeypatch, config, "locked") == 1
    err = capsys.readouterr().err
    assert re.search(r"another train\.py \(pid \d+\) is training into logs/locked since \d{4}-\d\d-\d\d", err)
    assert _steps(project / "logs/locked") == {"G": [], "D": []}
    assert _train(project, monkeypatch, config, "locked") == 0  # released with the holder


def test_stale_lock_of_a_dead_process_is_taken_over(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(project, "stale", epochs=1)
    (project / "logs/stale").mkdir(parents=True)
    (project / "logs/stale/.train.lock").write_text("999999 train.py 2026-01-01 00:00:00")
    assert _train(project, monkeypatch, config, "stale") == 0


def test_refused_run_keeps_the_run_config(project: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run = project / "logs/refused"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"the": "previous run"}')
    base = read_checkpoint(ROOT.parent / "shared/fixtures/sovits41/synth/base_vec768/G_800.pth") \
        if (ROOT.parent / "shared/fixtures/sovits41/synth/base_vec768/G_800.pth").exists() else None
    if base is None:
        pytest.skip("synth fixture not available")
    torch.save(base, run / "G_0.pth")  # a 768-dim base against a 48-dim config: refused
    assert _train(project, monkeypatch, _config(project, "refused", epochs=1), "refused") == 1
    assert "takes 768-dim units" in capsys.readouterr().out
    assert (run / "config.json").read_text() == '{"the": "previous run"}'
    (run / "G_0.pth").unlink()
    config = _config(project, "refused", epochs=1)
    assert _train(project, monkeypatch, config, "refused") == 0
    assert (run / "config.json").read_bytes() == (project / config).read_bytes()
    assert (run / "config.json.bak").read_text() == '{"the": "previous run"}'


def test_full_disk_during_a_save_says_so(project: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import core.atomic

    config = _config(project, "full", epochs=1)
    real = core.atomic.os.fsync

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_size > 100_000:  # a checkpoint, not the lock or the githash
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(core.atomic.os, "fsync", fsync)
    assert _train(project, monkeypatch, config, "full") == 1
    out = capsys.readouterr()
    assert "is full: writing D_0.pth stopped after" in out.out + out.err
    assert "Traceback" not in out.out + out.err
    assert not [p for p in (project / "logs/full").iterdir() if p.suffix in (".pth", ".tmp")]


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_a_saved_step(project: Path) -> None:
    """train.py is killed at random moments (saves included) and rerun; every rerun resumes from a complete
    step no older than the newest complete one on disk, and no temporary file survives a restart."""
    config = _config(project, "kill", epochs=6, eval_interval=1)
    run = project / "logs/kill"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for trial in range(3):
        before = _steps(run) if run.exists() else {"G": [], "D": []}
        complete = sorted(set(before["G"]) & set(before["D"]))
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-c", config, "-m", "kill", "--device",
                                 "cpu", "--num_workers", "0"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            now = _steps(run) if run.exists() else {"G": [], "D": []}
            if len(now["D"]) > len(before["D"]) + trial % 2:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0]
        after = _steps(run)
        done = sorted(set(after["G"]) & set(after["D"]))
        assert done[-1:] >= complete[-1:], out
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-c", config, "-m", "kill", "--device", "cpu",
                             "--num_workers", "0"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    last = sorted(set(_steps(run)["G"]) & set(_steps(run)["D"]))[-1]
    assert last == 11  # 6 epochs x 2 steps, counted from 0
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert "Traceback" not in result.stdout + result.stderr


def test_second_ctrl_c_ends_with_the_promised_message(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys) -> None:
    from training.loop import Trainer

    def abort(self) -> bool:
        raise KeyboardInterrupt  # what StopFlag raises on a second Ctrl+C more than a second after the first

    monkeypatch.setattr(Trainer, "fit", abort)
    assert _train(project, monkeypatch, _config(project, "abort", epochs=1), "abort") == 128 + signal.SIGINT
    out = capsys.readouterr()
    assert "Aborted at once; the checkpoints saved before are intact" in out.out
    assert "Traceback" not in out.out + out.err
