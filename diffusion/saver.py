"""The `train_diff.py` experiment folder (`env.expdir`) as 4.1 writes it: `config.yaml` (keys sorted),
`log_info.txt`, TensorBoard `logs/`, and `model_<step>.pt` = {'global_step', 'model'[, 'optimizer']};
plus the resume and retention rules."""
from __future__ import annotations

import datetime
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from core.atomic import write_atomic
from core.checkpoint import (CheckpointError, CheckpointNotFoundError, LoadReport, latest_checkpoint_path,
                             load_model_state, safe_torch_load)
from core.config import HParams, save_config
from core.runlog import Summary, attached_handlers, plot_spectrogram_to_numpy

logger = logging.getLogger("diffusion")

__all__ = ["ResumeState", "Saver", "find_resume_checkpoint", "load_model", "retention_victims", "run_logging"]

_MODEL_NAME = re.compile(r"^model_(\d+)\.pt$")
# 4.1 draws the |pred - gt| panel of the validation figure shifted to this floor (log-mel minimum).
SPEC_VMIN = -14.0


@contextmanager
def run_logging(expdir: str) -> Iterator[None]:
    """Bare console lines (as 4.1 printed them), also appended to `log_info.txt`."""
    os.makedirs(expdir, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stdout),
                logging.FileHandler(os.path.join(expdir, "log_info.txt"), encoding="utf-8")]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
    with attached_handlers(handlers):
        yield


def find_resume_checkpoint(expdir: str) -> str | None:
    """The `model_<N>.pt` with the largest N directly in `expdir`, or None (other `*.pt` files get a warning)."""
    try:
        return latest_checkpoint_path(expdir, "model_*.pt")
    except CheckpointNotFoundError:
        pass
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


def load_model(expdir: str, model: nn.Module, optimizer: torch.optim.Optimizer | None,
               device: torch.device | str = "cpu") -> ResumeState:
    """Restore the newest checkpoint of `expdir` into `model` non-strictly, and into `optimizer` only when
    every model tensor came from the file. Raises CheckpointError for an unreadable or foreign file."""
    path = find_resume_checkpoint(expdir)
    if path is None:
        return ResumeState()
    logger.info(" [*] restoring model from %s", path)
    ckpt = safe_torch_load(path, map_location=device)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        found = list(ckpt)[:6] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a diffusion checkpoint: expected a dict with 'model' (a state "
                              f"dict) and 'global_step', found {found}. Move it out of {expdir}.")
    step = ckpt.get("global_step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: 'global_step' must be a non-negative integer, got {step!r}")
    report = load_model_state(model, ckpt["model"], source=path)
    model.float()  # a half-precision file must not turn training into fp16 weights
    state = ResumeState(global_step=step, path=path, report=report)
    saved_opt = ckpt.get("optimizer")
    if optimizer is not None and saved_opt is not None:
        if report.missing or report.mismatched:
            logger.warning(" [!] %s: optimizer state not restored (the weights did not all fit); "
                           "starting with fresh optimizer moments", path)
        else:
            try:
                optimizer.load_state_dict(saved_opt)
                state.optimizer_restored = True
            except (ValueError, KeyError, RuntimeError) as err:
                logger.warning(" [!] %s: optimizer state does not fit (%s); starting with fresh optimizer "
                               "moments", path, err)
    return state


def retention_victims(expdir: str, step: int, interval_val: int, interval_force_save: int) -> list[str]:
    """After saving `model_<step>.pt`: every `model_<k>.pt` with step - interval_val <= k < step and k not a
    multiple of `interval_force_save` (4.1's rule; it also drops extra saves at a stop, never `model_0.pt`)."""
    if not os.path.isdir(expdir) or interval_val <= 0:
        return []
    steps = [(int(m.group(1)), name) for name in sorted(os.listdir(expdir)) if (m := _MODEL_NAME.match(name))]
    return [os.path.join(expdir, name) for k, name in steps
            if step - interval_val <= k < step and not (interval_force_save > 0 and k % interval_force_save == 0)]


class Saver:
    """Experiment folder writer (config copy, logs, TensorBoard, checkpoints) of a diffusion config."""

    def __init__(self, args: HParams, initial_global_step: int = 0) -> None:
        self.expdir = str(args.env.expdir)
        self.sample_rate = int(args.data.sampling_rate)
        self.global_step = int(initial_global_step)
        self.init_time = time.time()
        self.last_time = self.init_time
        os.makedirs(self.expdir, exist_ok=True)
        save_config(args, os.path.join(self.expdir, "config.yaml"))
        self.summary = Summary(os.path.join(self.expdir, "logs"))

    def log_info(self, msg: str) -> None:
        logger.info("%s", msg)

    def log_value(self, values: Mapping[str, float]) -> None:
        self.summary.write(self.global_step, scalars=values)

    def log_spec(self, name: str, spec: torch.Tensor, spec_out: torch.Tensor) -> None:
        """Figure of |pred - gt| + SPEC_VMIN, gt and pred side by side; mels [1, T, M]."""
        both = torch.cat([(spec_out - spec).abs() + SPEC_VMIN, spec, spec_out], -1)[0]
        image = plot_spectrogram_to_numpy(both.detach().float().cpu().numpy().T)
        self.summary.write(self.global_step, images={name: image})

    def log_audio(self, audios: Mapping[str, torch.Tensor]) -> None:
        """Clips [1, N] or [N] in [-1, 1] at the data sample rate."""
        self.summary.write(self.global_step, audios=audios, audio_sampling_rate=self.sample_rate)

    def global_step_increment(self) -> None:
        self.global_step += 1

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

    def save_model(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> str:
        """Write `model_<step>.pt` atomically; returns its path."""
        payload: dict[str, Any] = {"global_step": int(step), "model": model.state_dict()}
        if optimizer is not None:
            payload["optimizer"] = optimizer.state_dict()
        path = os.path.join(self.expdir, f"model_{step}.pt")
        write_atomic(path, lambda f: torch.save(payload, f))
        logger.info(" [*] model checkpoint saved: %s", path)
        return path

    def apply_retention(self, step: int, interval_val: int, interval_force_save: int) -> list[str]:
        """Delete the `retention_victims`; returns their paths."""
        deleted = []
        for path in retention_victims(self.expdir, step, interval_val, interval_force_save):
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            logger.info(" [*] model checkpoint deleted: %s", path)
            deleted.append(path)
        return deleted
