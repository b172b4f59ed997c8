"""Where a So-VITS run starts: fresh, fine-tuning from `G_0`/`D_0`, or resuming from the newest `G_N`/`D_N`.

As in 4.1, G and D are found independently; the first epoch run is the one stored in the checkpoint
(an interrupted epoch restarts), the step counter continues after the D file's step, and the saved
learning rate is decayed once more. A checkpoint that does not fit the config, or a release file, is
an error with the reason, never a silent fresh start.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR

from core.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    ReleaseCheckpointError,
    check_optimizer,
    checkpoint_step,
    is_release_state,
    latest_checkpoint_path,
    load_model_state,
    read_checkpoint,
    resume_refusal,
)
from generator import width_problem

logger = logging.getLogger(__name__)

__all__ = ["ResumeState", "build_scheduler", "find_latest", "restore"]


@dataclass
class ResumeState:
    """First epoch to run, the step counter to continue with, and the files they came from."""

    epoch: int = 1
    global_step: int = 0
    g_path: str | None = None
    d_path: str | None = None

    @property
    def fresh(self) -> bool:
        return self.g_path is None and self.d_path is None


def find_latest(model_dir: str, prefix: str) -> str | None:
    """Newest `<prefix>_<step>.pth` in `model_dir`, or None."""
    try:
        return latest_checkpoint_path(model_dir, f"{prefix}_*.pth")
    except CheckpointNotFoundError:
        return None


def _check_encoder(path: str, state: dict, ssl_dim: int, speech_encoder: str) -> None:
    """A base model for another content encoder would silently keep a random `pre` layer."""
    problem = width_problem(state, ssl_dim, path, f"the config (speech_encoder {speech_encoder})")
    if problem:
        raise CheckpointError(f"{problem}. Use the pretrained base model made for {speech_encoder}, or delete "
                              f"{os.path.basename(path)} and its D file to train from scratch.")


def _load(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
          ssl_dim: int | None = None, speech_encoder: str = "") -> int:
    """Load one G/D file into model + optimizer; returns its `iteration` (epoch).

    Model tensors are matched leniently (a line per skipped tensor); the optimizer strictly.
    """
    logger.info("Loading %s", path)
    ckpt = read_checkpoint(path)
    if is_release_state(ckpt["model"]) and not is_release_state(name for name, _ in model.named_parameters()):
        raise ReleaseCheckpointError(resume_refusal(path))  # enc_q would restart from random weights
    if ssl_dim is not None:
        _check_encoder(path, ckpt["model"], ssl_dim, speech_encoder)
    with_optimizer = ckpt["optimizer"] is not None
    if with_optimizer:
        check_optimizer(optimizer, ckpt["optimizer"], path, model)
    report = load_model_state(model, ckpt["model"], source=path)
    for key, saved, wanted in report.mismatched:
        logger.warning("%s: skipped %s (checkpoint %s, model %s); it keeps its fresh initial values",
                       os.path.basename(path), key, list(saved), list(wanted))
    for key in report.missing:
        logger.warning("%s: %s is not in the checkpoint; it keeps its fresh initial values",
                       os.path.basename(path), key)
    if report.dtype is not None and report.dtype != torch.float32:
        # A compressed fp16 file casts the model to fp16; training needs fp32 master weights.
        model.float()
    if with_optimizer:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: optimizer state does not fit ({err})") from None
    else:
        logger.info("%s has no optimizer state; the optimizer starts fresh", path)
    iteration = int(ckpt["iteration"])
    logger.info("Loaded checkpoint '%s' (iteration %d)", path, iteration)
    return iteration


def restore(model_dir: str, net_g: nn.Module, net_d: nn.Module, optim_g: torch.optim.Optimizer,
            optim_d: torch.optim.Optimizer, ssl_dim: int, speech_encoder: str) -> ResumeState:
    """Load the newest G/D of `model_dir` (if any) and work out where training continues.

    Raises:
        CheckpointError: a file is unreadable or does not fit the config (with the reason).
    """
    g_path, d_path = find_latest(model_dir, "G"), find_latest(model_dir, "D")
    state = ResumeState(g_path=g_path, d_path=d_path)
    if state.fresh:
        logger.info("No G_<step>.pth/D_<step>.pth in %s: training from scratch (put a pretrained "
                    "G_0.pth and D_0.pth there first to fine-tune)", model_dir)
        return state
    epoch = 1
    if g_path is not None:
        epoch = _load(g_path, net_g, optim_g, ssl_dim, speech_encoder)
    else:
        logger.warning("%s has %s but no G_<step>.pth; the generator starts from scratch",
                       model_dir, os.path.basename(str(d_path)))
    if d_path is not None:
        epoch = _load(d_path, net_d, optim_d)
    else:
        logger.warning("%s has %s but no D_<step>.pth; the discriminator starts from scratch",
                       model_dir, os.path.basename(str(g_path)))
    g_step = checkpoint_step(g_path) if g_path else None
    d_step = checkpoint_step(d_path) if d_path else None
    if g_step is not None and d_step is not None and g_step != d_step:
        logger.warning("newest G is step %d but newest D is step %d; continuing after step %d",
                       g_step, d_step, d_step)
    state.epoch = max(epoch, 1)
    state.global_step = (d_step if d_step is not None else g_step) + 1  # type: ignore[operator]
    return state


def build_scheduler(optimizer: torch.optim.Optimizer, lr_decay: float, first_epoch: int) -> ExponentialLR:
    """ExponentialLR(gamma=lr_decay) positioned for `first_epoch`, as 4.1 builds it.

    On a resume (first_epoch >= 2) the saved lr is decayed once more: older torch did that inside
    `ExponentialLR(last_epoch=...)`, and 4.1 runs were tuned with it.
    """
    for group in optimizer.param_groups:
        # Files without optimizer state (pretrained bases) lack it; torch requires it for last_epoch >= 0.
        group.setdefault("initial_lr", group["lr"])
    scheduler = ExponentialLR(optimizer, gamma=lr_decay, last_epoch=first_epoch - 2)
    if first_epoch >= 2:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * lr_decay
    return scheduler
