"""Lost-work faults of train_diff.py: exact resume, unreadable newest step, interrupted-save temp files,
two trainers on one folder, a full disk, a second Ctrl+C, the typed config, and kill -9 at random moments."""
from __future__ import annotations

import errno
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import train_diff
from conftest import ROOT
from core.checkpoint import safe_torch_load
from core.config import ConfigError, load_config
from core.lock import folder_lock
from diffusion.solver import DiffusionTrainer, check_config
from test_train_diff import _config, _models, base_project, project  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("single_thread")


def _cfg(root: Path, name: str, drop: tuple[str, ...] = (), **train) -> str:
    """configs/<name>.yaml training into logs/<name>; `drop`: dotted keys to delete."""
    path = _config(root, name, **train)
    cfg = yaml.safe_load((root / path).read_text())
    cfg["env"]["expdir"] = f"logs/{name}"
    for key in drop:
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        del node[leaf]
    (root / path).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _losses(log: str) -> dict[int, str]:
    return {int(step): loss for loss, step in re.findall(r"\| loss: (\S+) \|.*\| step: (\d+)", log)}


def _saved(run: Path) -> set[str]:
    return _models(run) if run.exists() else set()


def _stop_after(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """A stop request once `step` is trained, as the first Ctrl+C gives."""
    real = DiffusionTrainer.train_step

    def train_step(self: DiffusionTrainer, batch: dict) -> float:
        loss = real(self, batch)
        if self.saver.global_step >= step:
            self.stop_requested = lambda: True
        return loss

    monkeypatch.setattr(DiffusionTrainer, "train_step", train_step)


def test_resume_is_exact_step_for_step(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped inside an epoch and resumed = uninterrupted: same losses per step, same weights and optimizer
    state bit for bit (validation runs in between and must not shift the random draws)."""
    options = dict(batch_size=1, epochs=3, interval_val=4, save_opt=True)
    torch.manual_seed(0), random.seed(0)
    assert train_diff.main(["-c", _cfg(project, "whole", **options)]) == 0
    config = _cfg(project, "parts", **options)
    torch.manual_seed(0), random.seed(0)
    with monkeypatch.context() as patch:
        _stop_after(patch, 6)  # 4 clips, batch 1: epoch 1, after its second batch
        assert train_diff.main(["-c", config]) == 130
    torch.manual_seed(123), random.seed(123)  # the resumed run's own draws must not matter
    assert train_diff.main(["-c", config]) == 0
    whole, parts = ((project / f"logs/{n}/log_info.txt").read_text(encoding="utf-8") for n in ("whole", "parts"))
    assert " [*] resuming in epoch 1 after batch 2" in parts
    assert _losses(whole) == _losses(parts) and sorted(_losses(parts)) == list(range(1, 13))
    a, b = (safe_torch_load(project / f"logs/{n}/model_12.pt") for n in ("whole", "parts"))
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    assert a["resume"]["epoch"] == b["resume"]["epoch"] == 2 and a["resume"]["batch"] == b["resume"]["batch"] == 4


def test_unreadable_newest_step_is_skipped_and_temps_removed(project: Path) -> None:
    config = _cfg(project, "skip", epochs=1)
    assert train_diff.main(["-c", config]) == 0
    run = project / "logs/skip"
    good = (run / "model_2.pt").read_bytes()
    (run / "model_4.pt").write_bytes(good[: len(good) // 2])  # cut off (copied or damaged outside)
    (run / ".model_6.pt.abc123.tmp").write_bytes(b"\0" * 1000)  # a save that never finished
    assert train_diff.main(["-c", _cfg(project, "skip", epochs=2)]) == 0
    log = (run / "log_info.txt").read_text(encoding="utf-8")
    assert re.search(r"step 4 is unusable \(.*model_4\.pt is corrupt or truncated.*\); trying the step before",
                     log)
    assert " [*] restoring model from logs/skip/model_2.pt" in log
    assert "removed 1 temporary file(s) left by an interrupted save: logs/skip/.model_6.pt.abc123.tmp" in log
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert _models(run) == {"model_4.pt"} and safe_torch_load(run / "model_4.pt")["global_step"] == 4


def test_second_trainer_on_a_folder_is_refused(project: Path, capsys: pytest.CaptureFixture) -> None:
    config = _cfg(project, "locked", epochs=1)
    with folder_lock(project / "logs/locked", "train_diff.py"):
        assert train_diff.main(["-c", config]) == 1
    out = capsys.readouterr()
    assert re.fullmatch(r"ERROR: another train_diff\.py \(pid \d+\) is training into logs/locked since "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d; wait for it to finish or stop it first\n", out.err)
    assert "Traceback" not in out.out and _models(project / "logs/locked") == set()
    assert train_diff.main(["-c", config]) == 0  # released with the holder
    assert _models(project / "logs/locked") == {"model_2.pt"}


def test_stale_lock_of_a_dead_process_is_taken_over(project: Path) -> None:
    config = _cfg(project, "stale", epochs=1)
    (project / "logs/stale").mkdir(parents=True)
    (project / "logs/stale/.train.lock").write_text("999999 train_diff.py 2026-01-01 00:00:00")
    assert train_diff.main(["-c", config]) == 0
    assert _models(project / "logs/stale") == {"model_2.pt"}


def test_full_disk_during_a_save_says_so(project: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import core.atomic

    real = core.atomic.os.fsync

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_size > 10_000:  # a checkpoint, not config.yaml
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(core.atomic.os, "fsync", fsync)
    assert train_diff.main(["-c", _cfg(project, "full", epochs=1)]) == 1
    out = capsys.readouterr()
    assert "ERROR: the disk of logs/full is full: writing model_2.pt stopped after" in out.out
    assert "Traceback" not in out.out + out.err
    assert not [p for p in (project / "logs/full").iterdir() if p.suffix in (".pt", ".tmp")]


def test_second_ctrl_c_during_a_save_keeps_the_last_checkpoint(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys) -> None:
    import core.atomic
    import core.runlog

    clock = itertools.count(0, 2)  # the two signals come more than a second apart
    monkeypatch.setattr(core.runlog, "time", type("Clock", (), {"monotonic": staticmethod(lambda: next(clock))}))
    real, saves = core.atomic.os.fsync, []

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_size > 10_000:
            saves.append(fd)
            if len(saves) == 2:  # Ctrl+C twice while model_4.pt is being written
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
        real(fd)

    monkeypatch.setattr(core.atomic.os, "fsync", fsync)
    assert train_diff.main(["-c", _cfg(project, "abort", epochs=3)]) == 130
    out = capsys.readouterr()
    assert out.err.splitlines()[-1] == "Stopped at once; the last saved checkpoint in logs/abort is intact."
    assert "Traceback" not in out.out + out.err
    run = project / "logs/abort"
    assert _models(run) == {"model_2.pt"} and safe_torch_load(run / "model_2.pt")["global_step"] == 2
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_typed_config_defaults_nulls_and_wrong_types(project: Path) -> None:
    optional = ("device", "spk", "env.gpu_id", "data.unit_interpolate_mode", "train.cache_all_data",
                "train.cache_device", "train.cache_fp16", "train.num_workers", "train.save_opt")
    config = _cfg(project, "typed", drop=optional, epochs=1)
    cfg = check_config(load_config(config))
    assert (cfg.device, cfg.spk, cfg.env.gpu_id, cfg.data.training_unit_mode) == ("cpu", None, 0, "nearest")
    t = cfg.train
    assert (t.cache_all_data, t.cache_device, t.cache_fp16, t.num_workers, t.save_opt) == (True, "cpu", False, 0,
                                                                                           False)
    assert train_diff.main(["-c", config]) == 0
    text = (project / config).read_text()
    nulls = "  num_workers: null\n  cache_device: null\n  cache_all_data: null\n"
    (project / config).write_text(text.replace("train:\n", "train:\n" + nulls) + "device: null\nspk: null\n")
    assert check_config(load_config(config)) == cfg  # null means the default
    assert train_diff.main(["-c", config]) == 0
    (project / config).write_text(text.replace("train:\n", "train:\n  cache_fp16: 1\n"))
    with pytest.raises(ConfigError, match=r"train\.cache_fp16 must be true or false, got 1"):
        check_config(load_config(config))


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_a_saved_step(project: Path) -> None:
    """train_diff.py killed at random moments (saves included) and rerun: every rerun resumes from the newest
    saved step, no temporary file survives a restart, and the last run finishes every epoch."""
    config = _cfg(project, "kill", batch_size=1, epochs=6, interval_val=1, interval_force_save=1)
    run = project / "logs/kill"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "train_diff.py"), "-c", config]
    for _ in range(2):
        before = _saved(run)
        proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(_saved(run)) <= len(before):
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for name in _models(run):
            assert safe_torch_load(run / name)["global_step"] == int(name[6:-3])
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert max(int(name[6:-3]) for name in _models(run)) == 24  # 6 epochs x 4 clips
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert "Traceback" not in result.stdout + result.stderr
