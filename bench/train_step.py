"""Seconds per So-VITS training step (generator + discriminator, forward + backward + AdamW) and peak memory.

The step timed is the real one, ``training.loop.Trainer.train_step(batch, log=False)``: the Trainer
is built by its own ``__init__`` (models, AdamW optimisers, schedules, GradScaler, autocast choice)
with only the data loaders left out, because the batch is synthetic. Random weights (a fresh run
folder, so ``restore`` starts from scratch), batch 2 of T = 60 frames collated by the real
``TextAudioCollate``: units ~ N(0, 1) [ssl_dim, T], a sung F0 glide with unvoiced gaps, audio =
seeded noise [1, T * hop] and its spectrogram from ``spectrogram_torch`` [n_fft / 2 + 1, T].

Each config runs in its own child process so that its peak resident memory (``VmHWM`` of
/proc/self/status) is not raised by the config before it; on CUDA the figure is
``torch.cuda.max_memory_allocated``.

Run from the repository root::

    .venv/bin/python bench/train_step.py --configs tiny,default --repeats 5 --threads 2
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import load_average, machine_description, markdown_table, status_kib, timed  # noqa: E402

CONFIGS = {"default": ROOT / "configs_template" / "config_template.json",
           "tiny": ROOT / "configs_template" / "config_tiny_template.json"}
BATCH = 2
FRAMES = 60
SEED = 1234
RESULT_TAG = "TRAIN_STEP_RESULT "


@dataclass
class StepResult:
    """One config: median wall / process-CPU seconds per step, peak memory (MiB) and what it ran."""

    config: str
    device: str
    precision: str
    threads: int
    repeats: int
    seconds: float
    cpu_seconds: float
    peak_mib: float
    peak_kind: str
    parameters_g: int
    parameters_d: int
    segment_frames: int
    loss_g_total: float
    loss_d: float


def resolve_config(name: str) -> Path:
    """`tiny` / `default` -> the template in configs_template/; anything else is a path to a config.json."""
    return CONFIGS[name] if name in CONFIGS else Path(name)


def make_batch(hps: Any, batch: int = BATCH, frames: int = FRAMES, seed: int = SEED) -> tuple:
    """A collated batch as the training loader gives it, from seeded random data.

    Returns TextAudioCollate's tuple: (c [B, ssl_dim, T], f0 [B, T], spec [B, n_fft/2+1, T],
    audio [B, 1, T*hop], speaker ids [B, 1], lengths [B], uv [B, T], volume [B, T] or None).
    """
    from data_utils import TextAudioCollate
    from modules.mel_processing import spectrogram_torch

    data, model = hps.data, hps.model
    hop, sr = int(data.hop_length), int(data.sampling_rate)
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float32) * hop / sr
    # 220 -> 440 Hz glide with vibrato; every 15th frame opens a 3-frame unvoiced gap.
    semitones = 12.0 * torch.linspace(0.0, 1.0, frames) + 0.3 * torch.sin(2 * math.pi * 5.5 * t)
    uv = ((torch.arange(frames) % 15) >= 3).float()
    f0 = 220.0 * torch.pow(2.0, semitones / 12.0) * uv
    items = []
    for i in range(batch):
        audio = (0.1 * torch.randn(1, frames * hop, generator=gen)).clamp(-1.0, 1.0)
        spec = spectrogram_torch(audio, int(data.filter_length), sr, hop, int(data.win_length))[0]
        c = torch.randn(int(model.ssl_dim), frames, generator=gen)
        volume = audio.reshape(frames, hop).pow(2).mean(1).sqrt() if model.get("vol_embedding") else None
        speaker = torch.LongTensor([i % max(int(model.n_speakers), 1)])
        items.append((c, f0.clone(), spec, audio, speaker, uv.clone(), volume))
    return TextAudioCollate()(items)


def batch_trainer(hps: Any, model_dir: str, device: torch.device) -> Any:
    """The real `training.loop.Trainer` for `hps` on `device`, minus its data loaders: the caller hands
    `train_step` a synthetic batch. Rank 1 of 1: the rank only decides about TensorBoard writers,
    evaluation and checkpoints, none of which a step touches."""
    from training.loop import RunContext, Trainer

    class BatchTrainer(Trainer):
        def _build_data(self) -> None:
            self.train_loader = None
            self.eval_loader = None

    ctx = RunContext(rank=1, world_size=1, device=device, num_workers=0, stop_requested=lambda: False)
    return BatchTrainer(hps, model_dir, ctx)


def run_config(config: str, repeats: int, device_name: str = "cpu", warmup: int = 1,
               amp: str = "fp32") -> StepResult:
    """Build a Trainer for `config` (no data loaders), time `warmup` + `repeats` real train steps.

    `amp` "fp16" / "bf16" sets the config's `fp16_run` and `half_type` as a user would; the result's
    `precision` is what the Trainer's mixed-precision rule then chose on `device_name` (fp32 for fp16 on
    the CPU, and for bf16 on a CPU without native bf16).

    Peak memory on CPU is VmHWM after the steps minus VmRSS before the Trainer was built (so run
    this in a fresh process for a clean figure); on CUDA it is max_memory_allocated over the steps.
    """
    from core.config import load_config

    path = resolve_config(config)
    hps = load_config(path)
    hps.train.fp16_run, hps.train.half_type = amp != "fp32", "bf16" if amp == "bf16" else "fp16"
    device = torch.device(device_name)
    batch = make_batch(hps)
    rss_before = status_kib("VmRSS")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(int(hps.train.seed))
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = batch_trainer(hps, model_dir, device)
        for _ in range(warmup):
            trainer.train_step(batch, log=False)
        runs = [timed(lambda: trainer.train_step(batch, log=False), device) for _ in range(repeats)]
        wall, cpu, out = [r[0] for r in runs], [r[1] for r in runs], runs[-1][2]
        if device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
        else:
            hwm = status_kib("VmHWM")
            peak = (hwm - rss_before) / 1024 if hwm is not None and rss_before is not None else float("nan")
            kind = "RSS peak - RSS before"
        n_g = sum(p.numel() for p in trainer.net_g.parameters())
        n_d = sum(p.numel() for p in trainer.net_d.parameters())
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(trainer.amp_dtype, "fp32")
        return StepResult(config, str(device), precision, torch.get_num_threads(), repeats, statistics.median(wall),
                          statistics.median(cpu), peak, kind, n_g, n_d, trainer.segment_frames,
                          float(out["g_total"]), float(out["d"]))


def run_in_child(config: str, repeats: int, device: str, threads: int | None, amp: str = "fp32") -> StepResult:
    """`run_config` in a fresh Python process (clean peak-memory baseline); raises on failure."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config, "--repeats", str(repeats),
           "--device", device, "--amp", amp]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"train-step bench of {config} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return StepResult(**json.loads(lines[-1][len(RESULT_TAG):]))


def format_table(results: Sequence[StepResult]) -> str:
    """Markdown table: config, device, precision, threads, median s/step, CPU s/step, peak MiB, parameters."""
    return markdown_table(
        ["config", "device", "precision", "threads", "median s/step", "CPU s/step", "peak MiB", "G params",
         "D params"],
        [[r.config, r.device, r.precision, r.threads, f"{r.seconds:.3f}", f"{r.cpu_seconds:.3f}", f"{r.peak_mib:.0f}",
          f"{r.parameters_g / 1e6:.2f} M", f"{r.parameters_d / 1e6:.2f} M"] for r in results], numeric_from=3)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,default",
                        help="comma-separated: tiny, default (configs_template/) or paths to config.json files")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per config (after 1 warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda, cuda:N, or auto (cuda when available, else cpu)")
    parser.add_argument("--amp", default="fp32",
                        help="comma-separated precisions: fp32, fp16, bf16 (the config's fp16_run + half_type)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one config, JSON out
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    args.amp = [a.strip() for a in args.amp.split(",") if a.strip()]
    if not args.amp or any(a not in ("fp32", "fp16", "bf16") for a in args.amp):
        parser.error(f"--amp takes fp32, fp16 and bf16, got {','.join(args.amp) or 'nothing'}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available to this torch")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    missing = [c for c in args.configs if not resolve_config(c).is_file()]
    if missing:
        parser.error(f"config not found: {', '.join(missing)} (use tiny, default or a path)")
    return args


def main(argv: Sequence[str] | None = None) -> list[StepResult]:
    """Parse flags, time every config in its own process, print the machine line and the table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        result = run_config(args.child, args.repeats, args.device, amp=args.amp[0])
        print(RESULT_TAG + json.dumps(asdict(result)), flush=True)
        return [result]
    device = torch.device(args.device)
    print(machine_description(device))
    load_start = load_average()
    results = [run_in_child(c, args.repeats, args.device, args.threads, amp)
               for c in args.configs for amp in args.amp]
    print(f"batch {BATCH} x {FRAMES} frames, segment {results[0].segment_frames} frames; "
          f"median of {args.repeats} steps after 1 warm-up; load average {load_start} at the start, "
          f"{load_average()} at the end")
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
