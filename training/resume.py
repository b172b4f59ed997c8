"""Where a So-VITS run starts: fresh, fine-tuning from `G_0`/`D_0`, or resuming from the newest step.

A step counts only when its G and D files both read: after a save that died half-way (kill -9, full
disk) the run resumes from the step before, and says so. Files written here record epoch, batch and
random-number states, so a resumed run continues exactly; others (4.1's, pretrained bases) resume as
4.1 does: the stored epoch restarts, the step counter continues after the file's step, and the saved
learning rate is decayed once more. A file that does not fit the config, or a release file, is an
error with the reason, never a silent fresh start.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR

from core.checkpoint import (
    CheckpointError,
    ReleaseCheckpointError,
    check_optimizer,
    checkpoint_steps,
    is_release_state,
    load_model_state,
    read_checkpoint,
    resume_refusal,
)
from generator import width_problem

logger = logging.getLogger(__name__)

__all__ = ["ResumeState", "build_scheduler", "restore"]


@dataclass
class ResumeState:
    """Where training continues, and the files it came from."""

    epoch: int = 1
    global_step: int = 0
    g_path: str | None = None
    d_path: str | None = None
    batch: int = 0  # batches of `epoch` already trained (exact resume)
    rng: dict[str, Any] | None = None  # random-number states at the save (exact resume)

    @property
    def exact(self) -> bool:
        return self.rng is not None


def _load(path: str, ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
          ssl_dim: int | None = None, speech_encoder: str = "") -> None:
    """Load one read G/D file into model (leniently, a line per skipped tensor) and optimizer (strictly)."""
    if is_release_state(ckpt["model"]) and not is_release_state(name for name, _ in model.named_parameters()):
        raise ReleaseCheckpointError(resume_refusal(path))  # enc_q would restart from random weights
    if ssl_dim is not None:  # a base model for another content encoder would keep a random `pre` layer
        problem = width_problem(ckpt["model"], ssl_dim, path, f"the config (speech_encoder {speech_encoder})")
        if problem:
            raise CheckpointError(f"{problem}. Use the pretrained base model made for {speech_encoder}, or "
                                  f"delete {os.path.basename(path)} and its D file to train from scratch.")
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
        model.float()  # a compressed fp16 file cast the model; training needs fp32 master weights
    if with_optimizer:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: optimizer state does not fit ({err})") from None
    else:
        logger.info("%s has no optimizer state; the optimizer starts fresh", path)
    logger.info("Loaded checkpoint '%s' (iteration %d)", path, int(ckpt["iteration"]))


def _newest_complete(model_dir: str) -> tuple[int, str | None, dict | None, str | None, dict | None] | None:
    """(step, G path, G dict, D path, D dict) of the newest step whose G and D both read. Older steps are
    tried when a newer one is incomplete, with the reason logged; without any complete step, the newest
    readable G alone (a pretrained or shared generator) is used with a fresh discriminator."""
    found = {prefix: dict(checkpoint_steps(model_dir, f"{prefix}_*.pth")) for prefix in ("G", "D")}
    lone_g: tuple[int, str, dict] | None = None
    for step in sorted(set(found["G"]) | set(found["D"]), reverse=True):
        paths = {p: os.path.join(model_dir, found[p][step]) if step in found[p] else None for p in ("G", "D")}
        try:
            dicts = {p: read_checkpoint(path) if path and paths["G"] else None for p, path in paths.items()}
        except CheckpointError as err:
            logger.warning("step %d is unusable (%s); trying the step before", step, err)
            continue
        if None not in dicts.values():
            return step, paths["G"], dicts["G"], paths["D"], dicts["D"]
        if dicts["G"] is not None and lone_g is None:
            lone_g = step, paths["G"], dicts["G"]
        logger.warning("step %d is incomplete (%s_%d.pth is missing); trying the step before", step,
                       "D" if paths["G"] else "G", step)
    return (*lone_g, None, None) if lone_g else None


def restore(model_dir: str, net_g: nn.Module, net_d: nn.Module, optim_g: torch.optim.Optimizer,
            optim_d: torch.optim.Optimizer, ssl_dim: int, speech_encoder: str) -> ResumeState:
    """Load the newest complete step of `model_dir` (if any); where training continues.
    Raises CheckpointError (with the reason) when a file does not fit the config."""
    newest = _newest_complete(model_dir) if os.path.isdir(model_dir) else None
    if newest is None:
        logger.info("No G_<step>.pth/D_<step>.pth in %s: training from scratch (put a pretrained "
                    "G_0.pth and D_0.pth there first to fine-tune)", model_dir)
        return ResumeState()
    step, g_path, g_ckpt, d_path, d_ckpt = newest
    state = ResumeState(g_path=g_path, d_path=d_path, global_step=step + 1)
    for path, ckpt, net, optim in ((g_path, g_ckpt, net_g, optim_g), (d_path, d_ckpt, net_d, optim_d)):
        if ckpt is None:
            logger.warning("%s has G_%d.pth but no D_<step>.pth; the discriminator starts from scratch",
                           model_dir, step)
            continue
        _load(path, ckpt, net, optim, *((ssl_dim, speech_encoder) if net is net_g else ()))
        state.epoch = max(int(ckpt["iteration"]), 1)
        resume = ckpt.get("resume")
        if isinstance(resume, dict) and {"epoch", "batch", "rng"} <= set(resume):
            state.epoch, state.batch, state.rng = int(resume["epoch"]), int(resume["batch"]), resume["rng"]
    logger.info("Resuming after step %d (epoch %d%s)", step, state.epoch,
                f", batch {state.batch}" if state.exact else ": the epoch restarts, as in 4.1")
    return state


def build_scheduler(optimizer: torch.optim.Optimizer, lr_decay: float, first_epoch: int,
                    extra_decay: bool = True) -> ExponentialLR:
    """ExponentialLR(gamma=lr_decay) positioned for `first_epoch`, as 4.1 builds it. On a 4.1-style resume
    (first_epoch >= 2, `extra_decay`) the saved lr is decayed once more: older torch did that inside
    `ExponentialLR(last_epoch=...)`, and 4.1 runs were tuned with it."""
    for group in optimizer.param_groups:
        # Files without optimizer state (pretrained bases) lack it; torch requires it for last_epoch >= 0.
        group.setdefault("initial_lr", group["lr"])
    scheduler = ExponentialLR(optimizer, gamma=lr_decay, last_epoch=first_epoch - 2)
    if first_epoch >= 2 and extra_decay:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * lr_decay
    return scheduler
