"""The training loop of `train_diff.py` (pipeline.md §8.2): Unit2Mel on `--use_diff` features.

`DiffusionTrainer` builds the vocoder (validation audio, mel width), the model and AdamW, restores
the newest `model_<N>.pt` of `env.expdir` (diffusion/saver.py), and runs `train.epochs` epochs:
every batch one optimiser step, every `interval_log` steps a console line and `train/loss`,
`train/lr`, every `interval_val` steps a checkpoint, retention, and validation (sampled mels vocoded
to audio, figures and `validation/loss` in TensorBoard).

Learning rate of step s: `lr * gamma ** max((s - 2) // decay_step, 0)`, what 4.1's StepLR (stepped
after every batch, rebuilt at resume with last_epoch = step - 2) produced; it is set directly.
Precision: `amp_dtype` fp16 uses autocast + GradScaler, bf16 autocast only (bf16 has fp32's range);
on the CPU fp16 falls back to fp32 with a warning (CPU fp16 kernels are slow or missing), bf16 is kept.

Beyond 4.1: CPU training works (`device: cuda` without CUDA warns and uses the CPU); a NaN/inf loss
stops with the step and clips named before anything is updated or saved; Ctrl+C / SIGTERM stop after
the current step and save it, as does the end of the last epoch.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import numpy as np
import torch
from torch import Tensor

from diffusion.data_loaders import DatasetError, get_data_loaders
from diffusion.saver import ResumeState, Saver, load_model, run_logging
from diffusion.unit2mel import Unit2Mel
from diffusion.vocoder import VOCODERS, Vocoder
from modules.audio_io import read_audio_mono, resample_audio
from core.checkpoint import CheckpointError
from core.config import ConfigError, HParams, load_config
from training.launch import StopFlag
from vdecoder.nsf_hifigan.models import VocoderLoadError

logger = logging.getLogger("diffusion")

__all__ = ["AMP_DTYPES", "DiffusionTrainer", "TrainDiffError", "check_config", "learning_rate_at",
           "run_training", "select_amp_dtype", "select_device"]

AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
HEADER = "epoch|batch_idx/num_batches|output_dir|batch/s|lr|time|step"

# (field, kind) that training reads; `check_config` names the file and field of any problem.
REQUIRED: tuple[tuple[str, str], ...] = (
    ("data.sampling_rate", "pos_int"), ("data.block_size", "pos_int"), ("data.duration", "pos_number"),
    ("data.encoder_out_channels", "pos_int"), ("data.training_files", "str"), ("data.validation_files", "str"),
    ("model.n_layers", "pos_int"), ("model.n_chans", "pos_int"), ("model.n_hidden", "pos_int"),
    ("model.use_pitch_aug", "bool"), ("model.timesteps", "pos_int"), ("model.k_step_max", "int"),
    ("model.n_spk", "pos_int"), ("vocoder.type", "str"), ("vocoder.ckpt", "str"), ("infer.speedup", "pos_int"),
    ("infer.method", "str"), ("env.expdir", "str"), ("train.batch_size", "pos_int"), ("train.epochs", "int"),
    ("train.interval_log", "pos_int"), ("train.interval_val", "pos_int"),
    ("train.interval_force_save", "pos_int"), ("train.lr", "pos_number"), ("train.decay_step", "pos_int"),
    ("train.gamma", "pos_number"), ("train.weight_decay", "number"), ("train.amp_dtype", "str"),
)
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "pos_int": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "pos_number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a positive number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
}


class TrainDiffError(RuntimeError):
    """Training cannot go on; the message says what to change."""


def check_config(args: HParams, path: str = "diffusion.yaml") -> None:
    """Stop early, naming file and field, when a field training reads is missing or mistyped."""
    data = args.to_dict()
    problems = []
    for field, kind in REQUIRED:
        node: Any = data
        for part in field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        check, text = _KINDS[kind]
        if node is None:
            problems.append(f"{path}: {field} is missing")
        elif not check(node):
            problems.append(f"{path}: {field} must be {text}, got {node!r}")
    amp = data.get("train", {}).get("amp_dtype")
    if isinstance(amp, str) and amp not in AMP_DTYPES:
        problems.append(f"{path}: train.amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    vocoder = data.get("vocoder", {}).get("type")
    if isinstance(vocoder, str) and vocoder not in VOCODERS:
        problems.append(f"{path}: vocoder.type must be one of {', '.join(VOCODERS)}, got {vocoder!r}")
    if problems:
        raise ConfigError("\n".join(problems), path)


def select_device(name: str | None, gpu_id: int = 0) -> torch.device:
    """Config `device` -> torch device; `cuda` without CUDA warns and gives the CPU."""
    name = str(name or "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            logger.warning(" [!] device is %s in the config but CUDA is not available; training on the CPU "
                           "(works, but slowly)", name)
            return torch.device("cpu")
        return torch.device(f"cuda:{int(gpu_id)}" if name == "cuda" else name)
    return torch.device(name)


def select_amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """`train.amp_dtype` -> autocast dtype (None = plain fp32); fp16 on the CPU falls back to fp32."""
    if name not in AMP_DTYPES:
        raise ConfigError(f"train.amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {name!r}")
    dtype = AMP_DTYPES[name]
    if dtype is torch.float16 and device.type == "cpu":
        logger.warning(" [!] train.amp_dtype fp16 is not used on the CPU; training in fp32 (bf16 works there)")
        return None
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.amp_dtype is bf16 but this GPU has no bfloat16 support; use fp16 or fp32")
    return dtype


def learning_rate_at(step: int, lr: float, gamma: float, decay_step: int) -> float:
    """Learning rate of training step `step` (1-based), as 4.1's StepLR set it."""
    return lr * gamma ** max((step - 2) // decay_step, 0)


class DiffusionTrainer:
    """One `train_diff.py` run; call `fit()`, which returns the exit status.

    Args:
        args: the diffusion config (checked with `check_config`).
        device: training device (see `select_device`).
        num_workers: loader workers, overriding `train.num_workers`.
        stop_requested: polled after every step; True saves that step and ends the run.
        vocoder: a ready `diffusion.vocoder.Vocoder` (None builds it from `vocoder.type`/`vocoder.ckpt`).
    """

    def __init__(self, args: HParams, device: torch.device, num_workers: int | None = None,
                 stop_requested: Callable[[], bool] | None = None, vocoder: Any = None) -> None:
        self.args = args
        self.device = device
        self.stop_requested = stop_requested or (lambda: False)
        train = args.train
        if vocoder is None:
            vocoder = Vocoder(str(args.vocoder.type), str(args.vocoder.ckpt), device=device)
        self.vocoder = vocoder
        self._check_vocoder()
        m = args.model
        self.model = Unit2Mel(int(args.data.encoder_out_channels), int(m.n_spk), bool(m.use_pitch_aug),
                              int(vocoder.dimension), int(m.n_layers), int(m.n_chans), int(m.n_hidden),
                              int(m.timesteps), int(m.k_step_max))
        logger.info(" > Now model timesteps is %d, and k_step_max is %d", self.model.timesteps,
                    self.model.k_step_max)
        # AdamW defaults (betas 0.9/0.999, eps 1e-8); lr and weight decay are set from the config below.
        self.optimizer = torch.optim.AdamW(self.model.parameters())
        self.resume: ResumeState = load_model(str(args.env.expdir), self.model, self.optimizer, device="cpu")
        for group in self.optimizer.param_groups:
            group["initial_lr"] = float(train.lr)
            group["weight_decay"] = float(train.weight_decay)
        self._set_lr(self.resume.global_step + 1)
        self.model.to(device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor) and key != "step":
                    state[key] = value.to(device)
        self.amp_dtype = select_amp_dtype(str(train.amp_dtype), device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)
        self.loader_train, self.loader_valid = get_data_loaders(args, num_workers=num_workers,
                                                                n_mels=int(vocoder.dimension))
        self.saver = Saver(args, initial_global_step=self.resume.global_step)
        self.last_saved = self.resume.global_step if self.resume.path else None

    def _check_vocoder(self) -> None:
        rate, hop = int(self.args.data.sampling_rate), int(self.args.data.block_size)
        v_rate, v_hop = int(self.vocoder.vocoder_sample_rate), int(self.vocoder.vocoder_hop_size)
        if (rate, hop) != (v_rate, v_hop):
            raise ConfigError(f"data.sampling_rate/block_size in diffusion.yaml are {rate}/{hop} but the vocoder "
                              f"{self.args.vocoder.ckpt} works at {v_rate}/{v_hop}; the mels were made for the "
                              "vocoder, so set the config to its values")

    # -- one step -------------------------------------------------------------------------------
    def _set_lr(self, step: int) -> float:
        t = self.args.train
        lr = learning_rate_at(step, float(t.lr), float(t.gamma), int(t.decay_step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _autocast(self) -> ContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Tensors of a collated batch on the device; mels, units, f0 and volumes as float32."""
        out = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if isinstance(v, Tensor)}
        for key in ("mel", "units", "f0", "volume", "aug_shift"):
            out[key] = out[key].float()
        return out

    def train_step(self, batch: dict[str, Any]) -> float:
        """One optimiser step on a collated batch: units [B, L, C], f0/volume [B, L, 1], mel [B, L, M],
        spk_id [B, 1], aug_shift [B, 1, 1]. Returns the loss; a NaN/inf loss raises before any update."""
        self.model.train()
        x = self._inputs(batch)
        with self._autocast():
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
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return value

    # -- validation -------------------------------------------------------------------------------
    def _gt_audio(self, path: str) -> Tensor:
        audio, rate = read_audio_mono(path)
        target = int(self.args.data.sampling_rate)
        if rate != target:
            audio = resample_audio(audio, rate, target)
        return torch.from_numpy(audio).unsqueeze(0)

    @torch.no_grad()
    def validate(self) -> float | None:
        """Sample, vocode and log every validation clip; returns the mean validation loss (None: no set)."""
        if self.loader_valid is None:
            return None
        args, model = self.args, self.model
        model.eval()
        full = model.k_step_max == model.timesteps
        n_batches = len(self.loader_valid)
        test_loss, rtfs = 0.0, []
        repeats = int(args.train.batch_size)
        logger.info(" [*] testing...")
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
                            infer=True, infer_speedup=int(args.infer.speedup), method=str(args.infer.method),
                            k_step=model.k_step_max, use_tqdm=False)
                signal = self.vocoder.infer(mel, x["f0"])
                run_time = time.time() - started
                song_time = signal.shape[-1] / int(args.data.sampling_rate)
                rtfs.append(run_time / max(song_time, 1e-9))
                logger.info("RTF: %s  | %s / %s", rtfs[-1], run_time, song_time)
                for _ in range(repeats):
                    loss = model(x["units"], x["f0"], x["volume"], x["spk_id"], gt_spec=x["mel"], infer=False,
                                 k_step=model.k_step_max)
                    test_loss += float(loss)
                self.saver.log_spec(f"{speaker}_{fn}.wav", x["mel"], mel)
                self.saver.log_audio({f"{speaker}_{fn}_gt.wav": self._gt_audio(batch["name_ext"][0]),
                                      f"{speaker}_{fn}_pred.wav": signal.reshape(1, -1)})
        finally:
            model.train()
        test_loss /= repeats * max(n_batches, 1)
        logger.info(" [test_loss] test_loss: %s", test_loss)
        logger.info(" Real Time Factor %s", float(np.mean(rtfs)) if rtfs else 0.0)
        return test_loss

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, step: int, retention: bool = True) -> str:
        """`model_<step>.pt` (with the optimizer when `train.save_opt`), then the retention rule.

        Extra saves (stop request, end of training) skip retention; the next regular save removes
        them together with the previous regular one (see `saver.retention_victims`).
        """
        t = self.args.train
        optimizer = self.optimizer if bool(t.get("save_opt", False)) else None
        path = self.saver.save_model(self.model, optimizer, step)
        if retention:
            self.saver.apply_retention(step, int(t.interval_val), int(t.interval_force_save))
        self.last_saved = step
        return path

    def _save_latest(self) -> None:
        step = self.saver.global_step
        if step != self.last_saved and step > self.resume.global_step:
            self.save(step, retention=False)

    # -- the run ---------------------------------------------------------------------------------
    def _log_step(self, epoch: int, batch_idx: int, n_batches: int, loss: float) -> None:
        t = self.args.train
        lr = self.optimizer.param_groups[0]["lr"]
        rate = int(t.interval_log) / max(self.saver.get_interval_time(), 1e-9)
        self.saver.log_info(f"epoch: {epoch} | {batch_idx:3d}/{n_batches:3d} | {self.args.env.expdir} | "
                            f"batch/s: {rate:.2f} | lr: {lr:.6} | loss: {loss:.3f} | "
                            f"time: {self.saver.get_total_time()} | step: {self.saver.global_step}")
        self.saver.log_value({"train/loss": loss, "train/lr": lr})

    def _out_of_memory(self) -> TrainDiffError:
        t = self.args.train
        return TrainDiffError(
            f"Out of memory on {self.device} at step {self.saver.global_step}. Lower train.batch_size (now "
            f"{t.batch_size}) or data.duration (now {self.args.data.duration}) in diffusion.yaml; "
            "train.cache_device cpu and amp_dtype fp16/bf16 also save GPU memory.")

    def fit(self) -> int:
        """Train `train.epochs` epochs (4.1 counts them afresh on every start); returns 0, or 128 + signal
        number when stopped by `stop_requested` (the current step is saved)."""
        t = self.args.train
        saver = self.saver
        saver.log_info("--- model size ---")
        saver.log_info({"model": sum(p.numel() for p in self.model.parameters())})
        saver.log_info("======= start training =======")
        saver.log_info(HEADER)
        n_batches = len(self.loader_train)
        try:
            for epoch in range(int(t.epochs)):
                for batch_idx, batch in enumerate(self.loader_train):
                    saver.global_step_increment()
                    step = saver.global_step
                    self._set_lr(step)
                    try:
                        loss = self.train_step(batch)
                    except torch.OutOfMemoryError:
                        raise self._out_of_memory() from None
                    if step % int(t.interval_log) == 0:
                        self._log_step(epoch, batch_idx, n_batches, loss)
                    if step % int(t.interval_val) == 0:
                        self.save(step)
                        test_loss = self.validate()
                        if test_loss is not None:
                            saver.log_info(f" --- <validation> --- \nloss: {test_loss:.3f}. ")
                            saver.log_value({"validation/loss": test_loss})
                    if self.stop_requested():
                        self._save_latest()
                        saver.log_info(f" [*] stopped after step {step}; run the same command to resume")
                        signum = getattr(self.stop_requested, "signum", None)
                        return 128 + int(signum) if signum else 130
            self._save_latest()
            return 0
        finally:
            saver.close()


USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatasetError, CheckpointError, TrainDiffError,
                                                VocoderLoadError)


def run_training(config_path: str, num_workers: int | None = None) -> int:
    """`python train_diff.py -c <config>`: train into `env.expdir`, resuming from its newest checkpoint.

    Returns the exit status: 0 when `train.epochs` are done, 1 after an error with advice (printed
    without a traceback), 128 + signal number after Ctrl+C / SIGTERM (the current step is saved).
    """
    try:
        args = load_config(config_path)
        check_config(args, config_path)
    except ConfigError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    expdir = str(args.env.expdir)
    stop = StopFlag()
    with run_logging(expdir):
        logger.info(" > config: %s", config_path)
        logger.info(" >    exp: %s", expdir)
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            stop.install()
        try:
            device = select_device(args.get("device"), int(args.env.get("gpu_id", 0) or 0))
            trainer = DiffusionTrainer(args, device, num_workers=num_workers, stop_requested=stop)
            return trainer.fit()
        except USER_ERRORS as err:
            logger.error("ERROR: %s", err)
            return 1
        finally:
            stop.restore()
