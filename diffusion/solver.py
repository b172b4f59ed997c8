"""The training loop of `train_diff.py`: Unit2Mel on the `preprocess_hubert_f0.py --use_diff` features."""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from core.atomic import DiskFullError, remove_stale_temps
from core.checkpoint import CheckpointError
from core.config import ConfigError, HParams, load_config
from core.device import missing_device
from core.lock import FolderLockedError, folder_lock
from core.runlog import StopFlag, attached_handlers
from core.schema import DiffusionConfig, read_config
from core.train_support import (autocast, mixed_precision, needs_final_save, out_of_memory_message, rng_state,
                                 set_rng_state)
from diffusion.data_loaders import DatasetError, get_data_loaders
from diffusion.samplers import SAMPLERS
from diffusion.saver import ResumeState, Saver, load_model
from diffusion.unit2mel import build_unit2mel
from diffusion.vocoder import Vocoder
from modules.audio_io import read_audio_mono, resample_audio
from vdecoder.nsf_hifigan.models import VocoderLoadError

logger = logging.getLogger("diffusion")

__all__ = ["DiffusionTrainer", "TrainDiffError", "check_config", "learning_rate_at",
           "run_training", "select_amp_dtype", "select_device"]


class TrainDiffError(RuntimeError):
    """Training cannot go on; the message says what to change."""


def _method_rule(cfg: DiffusionConfig) -> list[tuple[str, str]]:
    if cfg.infer.speedup > 1 and cfg.infer.method not in SAMPLERS:
        return [("infer.method", f"infer.method must be one of {', '.join(SAMPLERS)} (or infer.speedup 1 for "
                                 f"the plain DDPM loop), got {cfg.infer.method!r}")]
    return []


def check_config(args: HParams, path: str = "") -> DiffusionConfig:
    """The typed view of a diffusion config; ConfigError names file and field of every problem."""
    return read_config(args, DiffusionConfig, path, for_training=True, rules=_method_rule)


def select_device(name: str, gpu_id: int = 0) -> torch.device:
    """Config `device` -> torch device; `cuda` without CUDA warns and gives the CPU; ConfigError for a GPU index
    this process does not see."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(" [!] device is %s in the config but CUDA is not available; training on the CPU "
                       "(works, but slowly)", name)
        return torch.device("cpu")
    device = torch.device(f"cuda:{gpu_id}" if name == "cuda" else name)
    if problem := missing_device(device):
        raise ConfigError(f"{problem}; set device (and env.gpu_id) in the diffusion config to one it sees")
    return device


def select_amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """Checked `train.amp_dtype` -> autocast dtype (None = plain fp32), by the rule every trainer follows."""
    return mixed_precision(name, device, "train.amp_dtype", lambda text: logger.warning(" [!] %s", text))


def learning_rate_at(step: int, lr: float, gamma: float, decay_step: int) -> float:
    """Learning rate of training step `step` (1-based), as 4.1's StepLR set it."""
    return lr * gamma ** max((step - 2) // decay_step, 0)


class DiffusionTrainer:
    """One `train_diff.py` run: builds vocoder, model and AdamW, resumes from `env.expdir`; `fit()` trains.
    stop_requested: polled after every step (True saves that step and ends the run); vocoder: a ready Vocoder
    (None: built from the config); num_workers overrides `train.num_workers`."""

    def __init__(self, args: HParams, device: torch.device, num_workers: int | None = None,
                 stop_requested: Callable[[], bool] | None = None, vocoder: Vocoder | None = None) -> None:
        self.cfg = cfg = check_config(args)
        self.device = device
        self.stop_requested = stop_requested or (lambda: False)
        self.vocoder = vocoder or Vocoder(cfg.vocoder.type, cfg.vocoder.ckpt, device=device)
        self._check_vocoder()
        self.model = build_unit2mel(args, self.vocoder.dimension).to(device)
        logger.info(" > Now model timesteps is %d, and k_step_max is %d", self.model.timesteps,
                    self.model.k_step_max)
        # AdamW defaults (betas 0.9/0.999, eps 1e-8); lr and weight decay are set from the config below.
        self.optimizer = torch.optim.AdamW(self.model.parameters())
        self.resume: ResumeState = load_model(cfg.env.expdir, self.model, self.optimizer)
        for group in self.optimizer.param_groups:
            group.update(initial_lr=float(cfg.train.lr), weight_decay=float(cfg.train.weight_decay))
        self._set_lr(self.resume.global_step + 1)
        self.amp_dtype = select_amp_dtype(cfg.train.amp_dtype, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)
        self.loader_train, self.loader_valid = get_data_loaders(cfg, num_workers, self.vocoder.dimension)
        self.saver = Saver(args, initial_global_step=self.resume.global_step)
        self.last_saved = self.resume.global_step if self.resume.path else None
        position = self.resume.position or {}
        self.epoch, self._resume_batch = int(position.get("epoch", 0)), int(position.get("batch", 0))
        self.batches_done, self._pending_rng = 0, position.get("rng")
        if position:
            logger.info(" [*] resuming in epoch %d after batch %d", self.epoch, self._resume_batch)
            self.loader_train.sampler.resume_seed = int(position["order_seed"])

    def _check_vocoder(self) -> None:
        data, vocoder = self.cfg.data, self.vocoder
        if (data.sampling_rate, data.block_size) != (vocoder.vocoder_sample_rate, vocoder.vocoder_hop_size):
            raise ConfigError(f"data.sampling_rate/block_size in diffusion.yaml are {data.sampling_rate}/"
                              f"{data.block_size} but the vocoder {self.cfg.vocoder.ckpt} works at "
                              f"{vocoder.vocoder_sample_rate}/{vocoder.vocoder_hop_size}; the mels were made for "
                              "the vocoder, so set the config to its values")

    def _set_lr(self, step: int) -> None:
        t = self.cfg.train
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(step, t.lr, t.gamma, t.decay_step)

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {k: v.to(self.device, torch.float32 if v.is_floating_point() else v.dtype, non_blocking=True)
                for k, v in batch.items() if isinstance(v, Tensor)}

    def train_step(self, batch: dict[str, Any]) -> float:
        """One optimiser step on a collated batch: units [B, L, C], f0/volume [B, L, 1], mel [B, L, M],
        spk_id [B, 1], aug_shift [B, 1, 1]. Returns the loss; a NaN/inf loss raises before any update."""
        self.model.train()
        x = self._inputs(batch)
        with autocast(self.device, self.amp_dtype):
            loss = self.model(x["units"], x["f0"], x["volume"], x["spk_id"], aug_shift=x["aug_shift"],
                              gt_spec=x["mel"], infer=False, k_step=self.model.k_step_max)
        value = float(loss.detach())
        if not np.isfinite(value):
            names = ", ".join(batch.get("name_ext", [])[:8])
            raise TrainDiffError(
                f" [x] {value} loss at step {self.saver.global_step} (clips: {names}); nothing was saved for this "
                "step. Check these clips' feature files (re-run python preprocess_hubert_f0.py --use_diff), "
                "lower train.lr, or use train.amp_dtype fp32.")
        self.optimizer.zero_grad(set_to_none=True)
        # A disabled scaler (fp32, bf16) passes the loss and the step straight through.
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value

    @torch.no_grad()
    def validate(self) -> float | None:
        """Sample, vocode and log every validation clip; returns the mean validation loss (None: no set)."""
        if self.loader_valid is None:
            return None
        cfg, model, sr = self.cfg, self.model, self.cfg.data.sampling_rate
        model.eval()
        full = model.k_step_max == model.timesteps
        n_batches = len(self.loader_valid)
        test_loss, rtfs = 0.0, []
        repeats = cfg.train.batch_size
        logger.info(" [*] testing...")
        rng = rng_state()  # validation draws must not change the training run's random sequence
        try:
            for bidx, batch in enumerate(self.loader_valid):
                name = batch["name"][0].replace("\\", "/")
                fn, speaker = name.split("/")[-1], (name.split("/")[-2] if "/" in name else "")
                logger.info("--------")
                logger.info("%d/%d - %s", bidx, n_batches, fn)
                logger.info(">> %s", name)
                x = self._inputs(batch)
                started = time.time()
                mel = model(x["units"], x["f0"], x["volume"], x["spk_id"], gt_spec=None if full else x["mel"],
                            infer=True, infer_speedup=cfg.infer.speedup, method=cfg.infer.method,
                            k_step=model.k_step_max, use_tqdm=False)
                signal = self.vocoder.infer(mel, x["f0"])
                run_time = time.time() - started
                song_time = signal.shape[-1] / sr
                rtfs.append(run_time / max(song_time, 1e-9))
                logger.info("RTF: %s  | %s / %s", rtfs[-1], run_time, song_time)
                for _ in range(repeats):
                    test_loss += float(model(x["units"], x["f0"], x["volume"], x["spk_id"], gt_spec=x["mel"],
                                             infer=False, k_step=model.k_step_max))
                self.saver.log_spec(f"{speaker}_{fn}.wav", x["mel"], mel)
                gt = resample_audio(*read_audio_mono(batch["name_ext"][0]), sr)
                audios = {f"{speaker}_{fn}_gt.wav": torch.from_numpy(gt).unsqueeze(0),
                          f"{speaker}_{fn}_pred.wav": signal.reshape(1, -1)}
                self.saver.summary.write(self.saver.global_step, audios=audios, audio_sampling_rate=sr)
        finally:
            model.train()
            set_rng_state(rng)
        test_loss /= repeats * max(n_batches, 1)
        logger.info(" [test_loss] test_loss: %s", test_loss)
        logger.info(" Real Time Factor %s", float(np.mean(rtfs)) if rtfs else 0.0)
        return test_loss

    def save(self, step: int, retention: bool = True) -> None:
        """Save `model_<step>.pt` (+ optimizer with `train.save_opt`, + where the run stands for an exact
        resume); extra saves (stop, end) skip retention."""
        t = self.cfg.train
        position = {"epoch": self.epoch, "batch": self.batches_done, "rng": rng_state(),
                    "order_seed": self.loader_train.sampler.seed}
        self.saver.save_model(self.model, self.optimizer if t.save_opt else None, step, extra={"resume": position})
        if retention:
            self.saver.apply_retention(step, t.interval_val, t.interval_force_save)
        self.last_saved = step

    def _log_step(self, epoch: int, batch_idx: int, n_batches: int, loss: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        rate = self.cfg.train.interval_log / max(self.saver.get_interval_time(), 1e-9)
        logger.info(f"epoch: {epoch} | {batch_idx:3d}/{n_batches:3d} | {self.cfg.env.expdir} | "
                    f"batch/s: {rate:.2f} | lr: {lr:.6} | loss: {loss:.3f} | "
                    f"time: {self.saver.get_total_time()} | step: {self.saver.global_step}")
        self.saver.summary.write(self.saver.global_step, scalars={"train/loss": loss, "train/lr": lr})

    def _save_latest(self) -> None:
        step = self.saver.global_step
        if needs_final_save(step, self.resume.global_step + 1, self.last_saved):
            self.save(step, retention=False)

    def _batches(self, skip: int) -> Iterator[dict[str, Any]]:
        """This epoch's batches after the first `skip`; an exact resume continues the saved random draws."""
        self.loader_train.sampler.skip = skip * self.cfg.train.batch_size
        iterator = iter(self.loader_train)
        if self._pending_rng is not None:  # after iter(), which draws a seed the saved run drew before
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        yield from iterator

    def fit(self) -> int:
        """Train until `train.epochs` epochs are done (files without a resume record, like 4.1's, count them
        afresh); returns 0, or 128 + signal number when stopped by `stop_requested` (the current step is saved)."""
        t, saver = self.cfg.train, self.saver
        logger.info("--- model size ---")
        logger.info(f"model: {sum(p.numel() for p in self.model.parameters()):,}")
        logger.info("======= start training =======")
        logger.info("epoch|batch_idx/num_batches|output_dir|batch/s|lr|time|step")
        n_batches = len(self.loader_train)
        if self.epoch + (self._resume_batch >= n_batches) >= t.epochs:
            logger.info(f" [*] all {t.epochs} epochs (train.epochs) are done; raise it to train on")
        try:
            for self.epoch in range(self.epoch, t.epochs):
                epoch, start, self._resume_batch = self.epoch, self._resume_batch, 0
                for batch_idx, batch in enumerate(self._batches(start), start):
                    self.batches_done = batch_idx + 1
                    saver.global_step += 1
                    step = saver.global_step
                    self._set_lr(step)
                    try:
                        loss = self.train_step(batch)
                    except torch.OutOfMemoryError:
                        raise TrainDiffError(out_of_memory_message(
                            self.device, step, f"Lower train.batch_size (now {t.batch_size}) or data.duration "
                            f"(now {self.cfg.data.duration}) in diffusion.yaml; train.cache_device cpu and "
                            "amp_dtype fp16/bf16 also save GPU memory.")) from None
                    if step % t.interval_log == 0:
                        self._log_step(epoch, batch_idx, n_batches, loss)
                    if step % t.interval_val == 0:
                        self.save(step)
                        test_loss = self.validate()
                        if test_loss is not None:
                            logger.info(f" --- <validation> --- \nloss: {test_loss:.3f}. ")
                            saver.summary.write(step, scalars={"validation/loss": test_loss})
                    if self.stop_requested():
                        self._save_latest()
                        logger.info(f" [*] stopped after step {step}; run the same command to resume")
                        signum = getattr(self.stop_requested, "signum", None)
                        return 128 + int(signum) if signum else 130
            self._save_latest()
            return 0
        finally:
            saver.close()


def run_training(config_path: str, num_workers: int | None = None) -> int:
    """`python train_diff.py -c <config>`: 0 when done, 1 after an error with advice (no traceback),
    128 + signal number after Ctrl+C / SIGTERM (the current step is saved), 130 after a second Ctrl+C."""
    expdir = None
    try:
        args = load_config(config_path)
        cfg = check_config(args, config_path)
        expdir = cfg.env.expdir
        with folder_lock(expdir, "train_diff.py"):
            return _train(args, cfg, config_path, num_workers)
    except (ConfigError, FolderLockedError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"Stopped at once; the last saved checkpoint{f' in {expdir}' if expdir else ''} is intact.",
              file=sys.stderr)
        return 130


def _train(args: HParams, cfg: DiffusionConfig, config_path: str, num_workers: int | None) -> int:
    stop = StopFlag()
    # Bare "%(message)s" lines (logging's default format), as 4.1 printed them, also appended to log_info.txt.
    log_file = os.path.join(cfg.env.expdir, "log_info.txt")
    with attached_handlers([logging.StreamHandler(sys.stdout), logging.FileHandler(log_file, encoding="utf-8")]):
        logger.info(" > config: %s", config_path)
        logger.info(" >    exp: %s", cfg.env.expdir)
        removed = remove_stale_temps(cfg.env.expdir)
        if removed:
            logger.warning(" [!] removed %d temporary file(s) left by an interrupted save: %s", len(removed),
                           ", ".join(removed))
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            stop.install()
        try:
            trainer = DiffusionTrainer(args, select_device(cfg.device, cfg.env.gpu_id), num_workers, stop)
            return trainer.fit()
        except (ConfigError, DatasetError, CheckpointError, TrainDiffError, VocoderLoadError,
                DiskFullError) as err:
            logger.error("ERROR: %s", err)
            return 1
        finally:
            stop.restore()
