"""The So-VITS GAN training loop of one process (`Trainer`).

Rank 0 logs, evaluates and saves; with several processes the models are wrapped in DDP and each trains
on its share of the list. A stop request ends the run after the current step with a checkpoint of it.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler, SequentialSampler

from core.features import DatasetError, read_filelist
from data_utils import TextAudioCollate, TextAudioSpeakerLoader
from generator import build_synthesizer
from models import MultiPeriodDiscriminator
from core.checkpoint import clean_checkpoints, save_checkpoint, unwrap_model
from modules.commons import slice_segments
from core.config import HParams
from core.schema import sovits_config
from core.train_support import (autocast, mixed_precision, needs_final_save, out_of_memory_message, rng_state,
                                 set_rng_state)
from modules.losses import discriminator_loss, feature_loss, generator_loss, kl_loss
from modules.mel_processing import mel_spectrogram_torch, spec_to_mel_torch
from training.resume import ResumeState, build_scheduler, restore
from core.runlog import Summary, plot_data_to_numpy, plot_spectrogram_to_numpy

logger = logging.getLogger(__name__)

__all__ = ["RunContext", "ScorerFactory", "Trainer", "TrainingError"]

# Builds, for a config and device, a scorer of [(original clip, resynthesis), ...] (float arrays) ->
# {figure name: mean value or None}.
ScorerFactory = Callable[[Any, torch.device], Callable[[list], dict[str, float | None]]]


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what to change."""


@dataclass
class RunContext:
    """Where this process sits: rank among `world_size`, its device, loader workers and stop flag."""

    rank: int
    world_size: int
    device: torch.device
    num_workers: int
    stop_requested: Callable[[], bool]
    scorer_factory: ScorerFactory | None = None  # set: evaluate() also logs the scorer's mean figures


class _SkipFirst(Sampler[int]):
    """The inner sampler's order without its first `skip` items (the epoch a run resumes inside)."""

    def __init__(self, inner: Sampler[int]) -> None:
        self.inner, self.skip = inner, 0

    def __iter__(self) -> Any:
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)  # type: ignore[arg-type]


def _quiet_worker(_: int) -> None:
    # Ctrl+C reaches every process of the terminal's group; the main process handles it and stops
    # the workers itself, so a worker must not die on it mid-batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Trainer:
    """One process of `train.py`: call `fit()`; it returns True when stopped early on request."""

    def __init__(self, hps: HParams, model_dir: str, ctx: RunContext) -> None:
        self.model_dir = model_dir
        self.ctx = ctx
        self.device = ctx.device
        self.is_main = ctx.rank == 0
        self.log = logging.getLogger(os.path.basename(os.path.normpath(model_dir)))
        self.cfg = sovits_config(hps, for_training=True)
        self.segment_frames = self.cfg.segment_frames
        self.amp_dtype = self._amp_dtype()
        if self.amp_dtype is not None and self.is_main:
            self.log.info("Mixed precision: %s autocast (fp16_run, half_type %s)",
                          "bf16" if self.amp_dtype == torch.bfloat16 else "fp16", self.cfg.train.half_type)
        self._build_data()
        self._build_models()
        self.global_step = self.state.global_step
        self.last_saved_step = self.state.global_step - 1  # the loaded step; -1 on a fresh start
        self.summary = Summary(model_dir) if self.is_main else None
        self.summary_eval = Summary(os.path.join(model_dir, "eval")) if self.is_main else None
        self.scorer = ctx.scorer_factory(self.cfg, self.device) if ctx.scorer_factory and self.is_main else None
        self._rate_mark = (time.perf_counter(), self.global_step)

    # -- construction -------------------------------------------------------------------------
    def _amp_dtype(self) -> torch.dtype | None:
        """fp16_run's autocast dtype: half_type "bf16" is bf16, anything else fp16, as in 4.1."""
        train = self.cfg.train
        if not train.fp16_run:
            return None
        return mixed_precision("bf16" if train.half_type == "bf16" else "fp16", self.device, "train.half_type",
                               self.log.warning)

    def _build_data(self) -> None:
        ctx, cfg, data = self.ctx, self.cfg, self.cfg.data
        all_in_mem = self.cfg.train.all_in_mem
        workers = 0 if all_in_mem else ctx.num_workers
        self.train_set = TextAudioSpeakerLoader(data.training_files, cfg, all_in_mem=all_in_mem)
        # Each process trains on its own share of the list (4.1 gave every GPU the same batches);
        # the order stays 4.1's fixed shuffle, so epochs get N times shorter.
        self.sampler = _SkipFirst(DistributedSampler(self.train_set, ctx.world_size, ctx.rank, shuffle=False)
                                  if ctx.world_size > 1 else SequentialSampler(self.train_set))
        self.train_loader = DataLoader(
            self.train_set, batch_size=self.cfg.train.batch_size, shuffle=False, sampler=self.sampler,
            num_workers=workers, pin_memory=self.device.type == "cuda", collate_fn=TextAudioCollate(),
            worker_init_fn=_quiet_worker if workers else None, persistent_workers=workers > 0)
        self.eval_loader: DataLoader | None = None
        if self.is_main:
            try:
                read_filelist(data.validation_files)
            except DatasetError as err:  # no validation clips only means no evaluation audio
                self.log.warning("no evaluation: %s", err)
                return
            eval_set = TextAudioSpeakerLoader(data.validation_files, cfg, all_in_mem=all_in_mem, vol_aug=False)
            self.eval_loader = DataLoader(eval_set, batch_size=1, shuffle=False, num_workers=0,
                                          collate_fn=TextAudioCollate())

    def _build_models(self) -> None:
        device, train, model = self.device, self.cfg.train, self.cfg.model
        net_g = build_synthesizer(self.cfg).to(device)
        net_d = MultiPeriodDiscriminator(model.use_spectral_norm, width=train.discriminator_width).to(device)
        self.optim_g = torch.optim.AdamW(net_g.parameters(), train.learning_rate, betas=train.betas, eps=train.eps)
        self.optim_d = torch.optim.AdamW(net_d.parameters(), train.learning_rate, betas=train.betas, eps=train.eps)
        self.state: ResumeState = restore(self.model_dir, net_g, net_d, self.optim_g, self.optim_d,
                                          model.ssl_dim, model.speech_encoder or "vec768l12")
        if self.ctx.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            net_g, net_d = (DistributedDataParallel(net, device_ids=ids) for net in (net_g, net_d))
        self.net_g, self.net_d = net_g, net_d
        self.sched_g = build_scheduler(self.optim_g, train.lr_decay, self.state.epoch, not self.state.exact)
        self.sched_d = build_scheduler(self.optim_d, train.lr_decay, self.state.epoch, not self.state.exact)
        self.batches_done, self._resume_batch, self._pending_rng = 0, self.state.batch, self.state.rng
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.auto_f0 = model.use_automatic_f0_prediction

    # -- helpers ------------------------------------------------------------------------------
    def _mel(self, spec: torch.Tensor) -> torch.Tensor:
        d = self.cfg.data
        return spec_to_mel_torch(spec, d.filter_length, d.n_mel_channels, d.sampling_rate, d.mel_fmin, d.mel_fmax)

    def _audio_mel(self, audio: torch.Tensor) -> torch.Tensor:
        d = self.cfg.data
        return mel_spectrogram_torch(audio.float(), d.filter_length, d.n_mel_channels, d.sampling_rate,
                                     d.hop_length, d.win_length, d.mel_fmin, d.mel_fmax)

    def _grad_norm(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Total L2 norm of the (unscaled) gradients; 4.1 logs it and never clips."""
        self.scaler.unscale_(optimizer)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads, 2.0)

    def _sync_flags(self, no_batch: bool) -> tuple[bool, bool]:
        """(stop, skip) agreed by all processes, so none waits forever in a collective."""
        stop = self.ctx.stop_requested()
        if self.ctx.world_size == 1:
            return stop, no_batch
        flags = torch.tensor([float(stop), float(no_batch)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        values = flags.tolist()
        return values[0] > 0, values[1] > 0

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, batch: tuple, log: bool) -> dict[str, Any]:
        """Discriminator then generator update on one collated batch: loss tensors (and, when `log`,
        gradient norms and the tensors to plot)."""
        c, f0, spec, y, g, lengths, uv, volume = (
            None if x is None else x.to(self.device, non_blocking=True) for x in batch)
        hop, seg = self.cfg.data.hop_length, self.cfg.train.segment_size
        with autocast(self.device, self.amp_dtype):
            (y_hat, ids_slice, z_mask, (_z, z_p, m_p, logs_p, _m_q, logs_q),
             pred_lf0, norm_lf0, lf0) = self.net_g(c, f0, uv, spec, g=g, c_lengths=lengths,
                                                   spec_lengths=lengths, vol=volume)
            y = slice_segments(y, ids_slice * hop, seg)
            y_d_r, y_d_g, _, _ = self.net_d(y, y_hat.detach())
        # The mel is linear per frame, so slicing the spectrogram first gives 4.1's slice of the mel.
        y_mel = self._mel(slice_segments(spec, ids_slice, self.segment_frames))
        y_hat_mel = self._audio_mel(y_hat.squeeze(1))
        loss_disc, _, _ = discriminator_loss(y_d_r, y_d_g)
        self.optim_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_disc).backward()
        grad_norm_d = self._grad_norm(self.optim_d) if log else None
        self.scaler.step(self.optim_d)

        # The generator pass needs gradients through D, not of D's weights (4.1 computed and then
        # discarded them, and all-reduced them under DDP): the bare module with frozen weights is
        # cheaper and gives the generator exactly the same gradients.
        disc = unwrap_model(self.net_d)
        disc.requires_grad_(False)
        try:
            with autocast(self.device, self.amp_dtype):
                y_d_r, y_d_g, fmap_r, fmap_g = disc(y, y_hat)
        finally:
            disc.requires_grad_(True)
        train = self.cfg.train
        loss_mel = F.l1_loss(y_mel, y_hat_mel) * float(train.c_mel)
        loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * float(train.c_kl)
        loss_fm = feature_loss(fmap_r, fmap_g)
        loss_gen, _ = generator_loss(y_d_g)
        loss_lf0 = (F.mse_loss(pred_lf0.float(), lf0.float()) if self.auto_f0
                    else torch.zeros((), device=self.device))
        loss_gen_all = loss_gen + loss_fm + loss_mel + loss_kl + loss_lf0
        self.optim_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_gen_all).backward()
        grad_norm_g = self._grad_norm(self.optim_g) if log else None
        self.scaler.step(self.optim_g)
        self.scaler.update()
        losses = {"d": loss_disc, "g": loss_gen, "fm": loss_fm, "mel": loss_mel, "kl": loss_kl, "lf0": loss_lf0,
                  "g_total": loss_gen_all}
        out: dict[str, Any] = {k: v.detach() for k, v in losses.items()}
        if log:
            out.update(grad_norm_d=grad_norm_d, grad_norm_g=grad_norm_g, plot_y_mel=y_mel[0],
                       plot_y_hat_mel=y_hat_mel[0], plot_mel=self._mel(spec[:1, :, :int(lengths[0])])[0])
            if self.auto_f0:
                out.update(plot_lf0=lf0[0, 0], plot_pred_lf0=pred_lf0[0, 0], plot_norm_lf0=norm_lf0[0, 0])
        return out

    # -- logging, evaluation, checkpoints ----------------------------------------------------
    def _report(self, epoch: int, batch_idx: int, n_batches: int, out: dict[str, Any]) -> None:
        lr = self.optim_g.param_groups[0]["lr"]
        losses = [float(out[k]) for k in ("d", "g", "fm", "mel", "kl")]
        now, mark_step = time.perf_counter(), self._rate_mark[1]
        done = self.global_step - mark_step
        rate = f"{done / (now - self._rate_mark[0]):.3g} steps/s" if done > 0 else "- steps/s"
        self._rate_mark = (now, self.global_step)
        self.log.info("Train Epoch: %d [%.0f%%]", epoch, 100.0 * batch_idx / max(n_batches, 1))
        self.log.info("Losses: %s, step: %d, lr: %s, reference_loss: %s, %s", losses, self.global_step, lr,
                      sum(losses), rate)
        scalars = {"loss/g/total": float(out["g_total"]), "loss/d/total": losses[0], "learning_rate": lr,
                   "grad_norm_d": float(out["grad_norm_d"]), "grad_norm_g": float(out["grad_norm_g"]),
                   "loss/g/fm": losses[2], "loss/g/mel": losses[3], "loss/g/kl": losses[4],
                   "loss/g/lf0": float(out["lf0"])}
        plot = {k[5:]: v.detach().float().cpu().numpy() for k, v in out.items() if k.startswith("plot_")}
        images = {"slice/mel_org": plot_spectrogram_to_numpy(plot["y_mel"]),
                  "slice/mel_gen": plot_spectrogram_to_numpy(plot["y_hat_mel"]),
                  "all/mel": plot_spectrogram_to_numpy(plot["mel"])}
        if self.auto_f0:
            images["all/lf0"] = plot_data_to_numpy(plot["lf0"], plot["pred_lf0"])
            images["all/norm_lf0"] = plot_data_to_numpy(plot["lf0"], plot["norm_lf0"])
        if self.summary is not None:
            self.summary.write(self.global_step, scalars=scalars, images=images)

    @torch.no_grad()
    def evaluate(self) -> None:
        """Convert every validation clip (noise scale 0.35) into `logs/<run>/eval`; with a scorer (train.py
        --eval_metrics) also log its mean figures there as `metrics/<name>`."""
        if self.eval_loader is None or self.summary_eval is None:
            return
        gen = unwrap_model(self.net_g)
        gen.eval()
        audios: dict[str, torch.Tensor] = {}
        images: dict[str, Any] = {}
        pairs: list[tuple[Any, Any]] = []
        try:
            for i, batch in enumerate(self.eval_loader):
                if batch is None:
                    continue
                c, f0, spec, y, g, _, uv, volume = (None if x is None else x[:1].to(self.device) for x in batch)
                y_hat, _ = gen.infer(c, f0, uv, g=g, vol=volume)
                audios[f"gen/audio_{i}"] = y_hat[0]
                audios[f"gt/audio_{i}"] = y[0]
                if self.scorer is not None:
                    pairs.append((y[0, 0].float().cpu().numpy(), y_hat[0, 0].float().cpu().numpy()))
                images = {"gen/mel": self._audio_mel(y_hat.squeeze(1))[0],
                          "gt/mel": self._mel(spec)[0]}
        finally:
            gen.train()
        rendered = {k: plot_spectrogram_to_numpy(v.float().cpu().numpy()) for k, v in images.items()}
        figures = self.scorer(pairs) if self.scorer is not None and pairs else {}
        scalars = {f"metrics/{key}": value for key, value in figures.items() if value is not None}
        self.summary_eval.write(self.global_step, scalars=scalars, images=rendered, audios=audios,
                                audio_sampling_rate=self.cfg.data.sampling_rate)

    def save(self, epoch: int, step: int) -> None:
        """G_<step>.pth and D_<step>.pth (atomic), then keep_ckpts cleanup; rank 0 only."""
        if not self.is_main:
            return
        lr0 = self.cfg.train.learning_rate
        # Where the run stands, so that a resumed run goes on with the next batch and the same random draws.
        extra = {"resume": {"epoch": epoch, "batch": self.batches_done, "rng": rng_state()}}
        # D first: a G_<step>.pth on disk then means its D was saved (resume also checks both).
        save_checkpoint(self.net_d, self.optim_d, lr0, epoch, os.path.join(self.model_dir, f"D_{step}.pth"), extra)
        save_checkpoint(self.net_g, self.optim_g, lr0, epoch, os.path.join(self.model_dir, f"G_{step}.pth"), extra)
        for path in clean_checkpoints(self.model_dir, self.cfg.train.keep_ckpts):
            self.log.info(".. Free up space by deleting ckpt %s", path)
        self.last_saved_step = step

    def _save_latest(self, epoch: int) -> None:
        if needs_final_save(self.global_step - 1, self.state.global_step, self.last_saved_step):
            self.save(epoch, self.global_step - 1)

    # -- epochs ------------------------------------------------------------------------------
    def _batches(self) -> Any:
        iterator = iter(self.train_loader)
        if self._pending_rng is not None:  # after iter(), which draws a seed the interrupted run drew before
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        while True:
            try:
                yield next(iterator)
            except StopIteration:
                return
            except RuntimeError as err:
                if "DataLoader worker" in str(err):
                    raise TrainingError(
                        f"A data-loader worker died ({str(err).splitlines()[0]}), most likely out of memory. "
                        "Lower train.batch_size, set train.all_in_mem to false, or use fewer workers "
                        "(train.py --num_workers 1).") from None
                raise

    def train_epoch(self, epoch: int) -> bool:
        """One pass over this process's share of the list; True when a stop was requested."""
        train = self.cfg.train
        start = self.batches_done = self._resume_batch  # non-zero only in the first epoch of an exact resume
        self._resume_batch = 0
        self.sampler.skip = start * train.batch_size
        n_batches = start + len(self.train_loader)
        for batch_idx, batch in enumerate(self._batches(), start):
            stop, skip = self._sync_flags(batch is None)
            if stop:
                return True
            self.batches_done = batch_idx + 1
            if skip:
                self.log.warning("step %d: no usable clip in this batch; skipped", self.global_step)
                continue
            report = self.is_main and self.global_step % train.log_interval == 0
            try:
                out = self.train_step(batch, report)
            except torch.OutOfMemoryError:
                raise TrainingError(out_of_memory_message(
                    self.device, self.global_step, f"Lower train.batch_size (now {train.batch_size}) or "
                    f"train.segment_size (now {train.segment_size}) in the config, or split very long clips "
                    "(over 20 s) before resample.py; fp16_run true also saves GPU memory.")) from None
            if report:
                self._report(epoch, batch_idx, n_batches, out)
            if self.is_main and self.global_step % train.eval_interval == 0:
                self.evaluate()
                self.save(epoch, self.global_step)
            self.global_step += 1
        return False

    def fit(self) -> bool:
        """Run the remaining epochs; True when stopped early (a checkpoint of the last step is saved)."""
        train = self.cfg.train
        warmup = train.warmup_epochs
        epoch = self.state.epoch
        started = time.perf_counter()
        try:
            for epoch in range(self.state.epoch, train.epochs + 1):
                if epoch <= warmup:
                    for optimizer in (self.optim_g, self.optim_d):
                        for group in optimizer.param_groups:
                            group["lr"] = float(train.learning_rate) / warmup * epoch
                if self.train_epoch(epoch):
                    self._save_latest(epoch)
                    if self.is_main:
                        self.log.info("Stopped after step %d; checkpoint saved in %s. Run the same command "
                                      "to resume.", self.global_step - 1, self.model_dir)
                    return True
                if self.is_main:
                    now = time.perf_counter()
                    self.log.info("====> Epoch: %d, cost %.2f s", epoch, now - started)
                    started = now
                with warnings.catch_warnings():
                    # The schedule follows the epoch count: an epoch resumed at its end, or one whose steps the
                    # fp16 loss scaler all skipped, has no optimizer step before this, which torch warns about.
                    warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
                    self.sched_g.step()
                    self.sched_d.step()
            self._save_latest(epoch)
            return False
        finally:
            for summary in (self.summary, self.summary_eval):
                if summary is not None:
                    summary.close()
