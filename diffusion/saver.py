"""The `train_diff.py` experiment folder (`env.expdir`) as 4.1 writes it: `config.yaml` (keys sorted),
`log_info.txt`, TensorBoard `logs/`, and `model_<step>.pt` = {'global_step', 'model'[, 'optimizer'], 'resume'};
plus the resume and retention rules."""
from __future__ import annotations

import datetime
import logging
import os
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from core.atomic import write_atomic
from core.checkpoint import CheckpointError, LoadReport, checkpoint_steps, load_model_state
from core.config import HParams, save_config
from core.runlog import Summary, plot_spectrogram_to_numpy
from diffusion.unit2mel import read_diffusion_checkpoint

logger = logging.getLogger("diffusion")

__all__ = ["ResumeState", "Saver", "find_resume_checkpoint", "load_model", "retention_victims"]


def find_resume_checkpoint(expdir: str) -> tuple[str, dict[str, Any]] | None:
    """(path, dict) of the newest readable `model_<N>.pt` directly in `expdir` (newer unreadable ones are skipped
    with a warning), or None. Raises CheckpointError when none of them is readable."""
    steps = checkpoint_steps(expdir, "model_*.pt") if os.path.isdir(expdir) else []
    error: CheckpointError | None = None
    for step, name in reversed(steps):
        path = os.path.join(expdir, name)
        try:
            return path, read_diffusion_checkpoint(path)
        except CheckpointError as err:
            logger.warning(" [!] step %d is unusable (%s); trying the step before", step, err)
            error = error or err
    if error is not None:
        raise CheckpointError(f"{error}. Move it out of {expdir} (or delete it) to train from scratch.")
    others = sorted(os.path.join(folder, name) for folder, _dirs, files in os.walk(expdir) for name in files
                    if name.endswith(".pt") and not name.startswith("."))
    if others:
        logger.warning(" [!] not resuming from %s: only model_<step>.pt files in %s are checkpoints",
                       ", ".join(others[:5]), expdir)
    return None


@dataclass
class ResumeState:
    global_step: int = 0
    path: str | None = None
    report: LoadReport | None = None
    optimizer_restored: bool = False
    position: dict[str, Any] | None = None  # where the saved run stood (exact resume); None in 4.1's files


def load_model(expdir: str, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> ResumeState:
    """Restore the newest readable checkpoint of `expdir` into `model` non-strictly, and into `optimizer` only
    when every model tensor came from the file. Raises CheckpointError when no file there is usable."""
    found = find_resume_checkpoint(expdir)
    if found is None:
        return ResumeState()
    path, ckpt = found
    logger.info(" [*] restoring model from %s", path)
    report = load_model_state(model, ckpt["model"], source=path)
    model.float()  # a half-precision file must not turn training into fp16 weights
    position = ckpt.get("resume")
    exact = isinstance(position, Mapping) and {"epoch", "batch", "order_seed", "rng"} <= set(position)
    state = ResumeState(ckpt.get("global_step", 0), path, report, position=dict(position) if exact else None)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        try:
            if report.missing or report.mismatched:
                raise ValueError("the weights did not all fit")
            optimizer.load_state_dict(ckpt["optimizer"])
            state.optimizer_restored = True
        except (ValueError, KeyError, RuntimeError) as err:
            logger.warning(" [!] %s: optimizer state not restored (%s); starting with fresh optimizer moments",
                           path, err)
    return state


def retention_victims(expdir: str, step: int, interval_val: int, interval_force_save: int) -> list[str]:
    """After saving `model_<step>.pt`: every `model_<k>.pt` with step - interval_val <= k < step and k not a
    multiple of `interval_force_save` (4.1's rule; it also drops extra saves at a stop, never `model_0.pt`)."""
    return [os.path.join(expdir, name) for k, name in checkpoint_steps(expdir, "model_*.pt")
            if step - interval_val <= k < step and not (interval_force_save > 0 and k % interval_force_save == 0)]


class Saver:
    """Experiment folder writer (config copy, logs, TensorBoard, checkpoints) of a diffusion config."""

    def __init__(self, args: HParams, initial_global_step: int = 0) -> None:
        self.expdir = str(args.env.expdir)
        self.global_step = int(initial_global_step)
        self.init_time = self.last_time = time.time()
        os.makedirs(self.expdir, exist_ok=True)
        save_config(args, os.path.join(self.expdir, "config.yaml"))
        self.summary = Summary(os.path.join(self.expdir, "logs"))

    def log_spec(self, name: str, spec: torch.Tensor, spec_out: torch.Tensor) -> None:
        """Figure of |pred - gt| - 14 (shifted to the log-mel floor, as 4.1), gt and pred; mels [1, T, M]."""
        both = torch.cat([(spec_out - spec).abs() - 14.0, spec, spec_out], -1)[0]
        image = plot_spectrogram_to_numpy(both.detach().float().cpu().numpy().T)
        self.summary.write(self.global_step, images={name: image})

    def get_interval_time(self) -> float:
        """Seconds since the previous call."""
        now = time.time()
        interval, self.last_time = now - self.last_time, now
        return interval

    def get_total_time(self) -> str:
        """Run time as `h:mm:ss.s`."""
        return str(datetime.timedelta(seconds=time.time() - self.init_time))[:-5]

    def close(self) -> None:
        self.summary.close()

    def save_model(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                   extra: Mapping[str, Any] | None = None) -> str:
        """Write `model_<step>.pt` atomically (plus `extra` entries, which 4.1 ignores); returns its path."""
        payload: dict[str, Any] = {"global_step": int(step), "model": model.state_dict(), **(extra or {})}
        if optimizer is not None:
            payload["optimizer"] = optimizer.state_dict()
        path = os.path.join(self.expdir, f"model_{step}.pt")
        write_atomic(path, lambda f: torch.save(payload, f))
        logger.info(" [*] model checkpoint saved: %s", path)
        return path

    def apply_retention(self, step: int, interval_val: int, interval_force_save: int) -> None:
        for path in retention_victims(self.expdir, step, interval_val, interval_force_save):
            with suppress(FileNotFoundError):
                os.remove(path)
                logger.info(" [*] model checkpoint deleted: %s", path)
