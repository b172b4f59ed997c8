"""Seconds per shallow-diffusion step for every sampler, and the real-time factor of a ``-ks 100`` pass.

Random weights under a fixed seed at the DEFAULT sizes (``configs_template/diffusion_template.yaml``:
WaveNet 20 layers x 512 channels, condition 256, 768-dim units; the public 44.1 kHz NSF-HiFiGAN
config: upsample rates 8,8,2,2,2, initial channel 512, resblock "1" with kernels 3,7,11) and fixed
synthetic inputs: ``--seconds`` of a harmonic tone gliding 220 -> 440 Hz, units ~ N(0, 1), its F0,
a constant volume. The figures depend only on the sizes, the machine and the thread count.

1. Samplers: ``Unit2Mel`` shallow diffusion from the tone's mel with ``--k_step`` / ``--speedup``
   for ddim, pndm, dpm-solver, dpm-solver++ and unipc, and the plain DDPM loop (speedup 1) over
   ``--ddpm_steps`` steps; network calls are counted by a hook on the WaveNet, and the first row
   times the bare WaveNet call, so "s per call" minus that row is the sampler's own overhead.
2. End to end, as ``inference_main.py -shd -ks K`` runs after So-VITS: vocoder mel of the audio,
   ``Unit2Mel`` with ``--method`` (default dpm-solver++, the template's), NSF-HiFiGAN vocoding.

Run from the repository root::

    .venv/bin/python bench/diffusion.py --seconds 5 --repeats 3 --threads 2
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
# Ahead of bench/ itself: run as a script, this file would otherwise shadow the diffusion package.
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import machine_description, markdown_table, timed as timed_once  # noqa: E402

TEMPLATE = ROOT / "configs_template" / "diffusion_template.yaml"
SEED = 1234
METHODS = ("ddim", "pndm", "dpm-solver", "dpm-solver++", "unipc")
# The public NSF-HiFiGAN 44.1 kHz release config.json (the fields the generator and mel need).
PUBLIC_VOCODER = {"resblock": "1", "upsample_rates": [8, 8, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4, 4],
                  "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
                  "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_mels": 128, "n_fft": 2048,
                  "hop_size": 512, "win_size": 2048, "sampling_rate": 44100, "fmin": 40, "fmax": 16000}
TINY_MODEL = {"n_layers": 2, "n_chans": 16, "n_hidden": 32}
TINY_VOCODER = {"upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]}


@dataclass
class Row:
    """One timed line: median wall / process-CPU seconds, network calls per run, audio seconds."""

    name: str
    seconds: float
    cpu_seconds: float
    audio_seconds: float
    calls: int = 0
    setting: str = ""


@dataclass
class Report:
    """Everything ``main`` measured (rows as printed) plus the end-to-end output mel / audio."""

    frames: int
    audio_seconds: float
    samplers: list[Row] = field(default_factory=list)
    stages: list[Row] = field(default_factory=list)
    mel: Tensor | None = None
    audio: Tensor | None = None


def model_sizes(tiny: bool) -> dict[str, Any]:
    """Unit2Mel constructor arguments from the diffusion template (``--tiny``: a 2-layer, 16-channel net)."""
    raw = yaml.safe_load(TEMPLATE.read_text())
    model = raw["model"]
    sizes = {"input_channel": int(raw["data"]["encoder_out_channels"]), "n_spk": 1,
             "use_pitch_aug": bool(model["use_pitch_aug"]), "out_dims": int(PUBLIC_VOCODER["num_mels"]),
             "n_layers": int(model["n_layers"]), "n_chans": int(model["n_chans"]),
             "n_hidden": int(model["n_hidden"]), "timesteps": int(model["timesteps"]),
             "k_step_max": int(model["k_step_max"])}
    return {**sizes, **TINY_MODEL} if tiny else sizes


def build(tiny: bool, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(Unit2Mel, NSF-HiFiGAN generator without weight norm, VocoderMel), seeded random weights, eval mode."""
    from diffusion.unit2mel import Unit2Mel
    from modules.mel_processing import VocoderMel
    from vdecoder.nsf_hifigan.models import build_generator

    torch.manual_seed(SEED)
    model = Unit2Mel(**model_sizes(tiny))
    with torch.no_grad():  # zero-initialised in training; random here so the mel is not a constant
        model.decoder.denoise_fn.output_projection.weight.normal_(0.0, 0.05)
    h = {**PUBLIC_VOCODER, **TINY_VOCODER} if tiny else dict(PUBLIC_VOCODER)
    vocoder = build_generator(h)
    vocoder.remove_weight_norm()
    mel = VocoderMel(h["sampling_rate"], h["num_mels"], h["n_fft"], h["win_size"], h["hop_size"], h["fmin"], h["fmax"])
    return model.to(device).eval(), vocoder.to(device).eval(), mel


def make_inputs(seconds: float, input_channel: int, sr: int = 44100, hop: int = 512) -> dict[str, Tensor]:
    """audio [1, N], units [1, T, C], f0 [1, T, 1] Hz, volume [1, T, 1] for T = N // hop frames."""
    frames = max(1, int(seconds * sr) // hop)
    n = frames * hop
    gen = torch.Generator().manual_seed(SEED + 1)
    time_s = torch.arange(n, dtype=torch.float64) / sr
    f0_curve = 220.0 * torch.pow(2.0, time_s / max(seconds, 1e-9))  # one octave over the clip
    phase = 2 * math.pi * torch.cumsum(f0_curve, 0) / sr
    audio = sum(0.3 / k * torch.sin(k * phase) for k in range(1, 9)).float().unsqueeze(0)
    return {"audio": audio, "units": torch.randn(1, frames, input_channel, generator=gen),
            "f0": f0_curve[::hop][:frames].float().reshape(1, frames, 1),
            "volume": torch.full((1, frames, 1), 0.1)}


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, float, Any]:
    """One warm-up call, then the median wall and CPU seconds of ``repeats`` calls; last result."""
    result = fn()
    runs = [timed_once(fn, device) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[-1][2]


class CallCounter:
    """Counts forward calls of a module through a hook (removed by ``close``)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        self.count += 1

    def close(self) -> None:
        self._handle.remove()


def bench_samplers(model: torch.nn.Module, cond: Tensor, gt_mel: Tensor, k_step: int, speedup: int,
                   ddpm_steps: int, methods: Sequence[str], repeats: int, device: torch.device,
                   audio_seconds: float) -> list[Row]:
    """Bare WaveNet call, the DDPM loop over ``ddpm_steps`` steps and each method at k_step / speedup."""
    decoder = model.decoder
    x = torch.randn(1, 1, decoder.out_dims, cond.shape[1], generator=torch.Generator().manual_seed(SEED + 2))
    x, step, cond_t = x.to(device), torch.full((1,), float(k_step - 1), device=device), cond.transpose(1, 2)
    rows = []
    with torch.inference_mode():
        wall, cpu, _ = timed(lambda: decoder.denoise_fn(x, step, cond_t), repeats, device)
        rows.append(Row("WaveNet call alone", wall, cpu, audio_seconds, 1, "-"))
        plans = [("ddpm (plain loop)", None, ddpm_steps, 1)] + [(m, m, k_step, speedup) for m in methods]
        for name, method, k, s in plans:
            counter = CallCounter(decoder.denoise_fn)

            def run() -> Tensor:
                torch.manual_seed(SEED)
                return decoder(cond, gt_spec=gt_mel, infer=True, infer_speedup=s, method=method, k_step=k,
                               use_tqdm=False)

            wall, cpu, _ = timed(run, repeats, device)
            counter.close()
            rows.append(Row(name, wall, cpu, audio_seconds, counter.count // (repeats + 1), f"{k} / {s}"))
    return rows


def bench_end_to_end(model: torch.nn.Module, vocoder: torch.nn.Module, mel_fn: Any, inputs: dict[str, Tensor],
                     k_step: int, speedup: int, method: str, repeats: int, device: torch.device,
                     audio_seconds: float) -> tuple[list[Row], Tensor, Tensor]:
    """Mel extraction, Unit2Mel sampling and vocoding, each timed; rows + the output mel and audio."""
    audio, units, f0, volume = (inputs[k].to(device) for k in ("audio", "units", "f0", "volume"))
    with torch.inference_mode():
        w_mel, c_mel, gt_mel = timed(lambda: mel_fn.get_mel(audio).transpose(1, 2), repeats, device)

        def diffuse() -> Tensor:
            torch.manual_seed(SEED)
            return model(units, f0, volume, gt_spec=gt_mel, infer=True, infer_speedup=speedup, method=method,
                         k_step=k_step, use_tqdm=False)

        w_dif, c_dif, mel = timed(diffuse, repeats, device)
        w_voc, c_voc, out = timed(lambda: vocoder(mel.transpose(1, 2), f0[:, :mel.shape[1], 0]), repeats, device)
    rows = [Row("vocoder mel of the input", w_mel, c_mel, audio_seconds),
            Row(f"Unit2Mel {method} k_step {k_step} / speedup {speedup}", w_dif, c_dif, audio_seconds),
            Row("NSF-HiFiGAN vocoder", w_voc, c_voc, audio_seconds)]
    rows.append(Row("total", sum(r.seconds for r in rows), sum(r.cpu_seconds for r in rows), audio_seconds))
    return rows, mel, out


def end_to_end_rtf(sampler: Row, stages: Sequence[Row]) -> float:
    """RTF of a conversion with ``sampler``: the input mel and vocoder stages plus the sampler's seconds."""
    fixed = sum(r.seconds for r in stages if r.name in ("vocoder mel of the input", "NSF-HiFiGAN vocoder"))
    return (sampler.seconds + fixed) / sampler.audio_seconds


def format_samplers(rows: Sequence[Row], stages: Sequence[Row] = ()) -> str:
    """Markdown: sampler, k_step / speedup, network calls, median s, s per call, RTF, CPU RTF, end-to-end RTF."""
    return markdown_table(
        ["sampler", "k_step / speedup", "network calls", "median s", "s per call", "RTF", "CPU RTF", "end-to-end RTF"],
        [[r.name, r.setting, r.calls, f"{r.seconds:.3f}", f"{r.seconds / max(r.calls, 1):.3f}",
          f"{r.seconds / r.audio_seconds:.3f}", f"{r.cpu_seconds / r.audio_seconds:.3f}",
          f"{end_to_end_rtf(r, stages):.3f}" if stages and r.setting != "-" else "-"] for r in rows])


def format_stages(rows: Sequence[Row]) -> str:
    """Markdown: stage, median s, RTF, CPU RTF."""
    return markdown_table(["stage", "median s", "RTF", "CPU RTF"],
                          [[r.name, f"{r.seconds:.3f}", f"{r.seconds / r.audio_seconds:.3f}",
                            f"{r.cpu_seconds / r.audio_seconds:.3f}"] for r in rows])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--k_step", type=int, default=100, help="shallow-diffusion depth (-ks)")
    parser.add_argument("--speedup", type=int, default=10, help="infer.speedup")
    parser.add_argument("--ddpm_steps", type=int, default=10, help="steps of the plain DDPM loop row")
    parser.add_argument("--method", default="dpm-solver++", choices=METHODS, help="sampler of the end-to-end run")
    parser.add_argument("--samplers", default=",".join(METHODS), help="comma-separated subset of the sampler rows")
    parser.add_argument("--tiny", action="store_true", help="tiny networks (smoke test), not the default sizes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds <= 0 or args.speedup < 1 or args.ddpm_steps < 1:
        parser.error("--repeats, --speedup and --ddpm_steps must be >= 1 and --seconds > 0")
    if not 1 <= args.k_step <= 1000:
        parser.error("--k_step must be in 1 .. 1000")
    args.samplers = [m.strip() for m in args.samplers.split(",") if m.strip()]
    unknown = [m for m in args.samplers if m not in METHODS]
    if unknown:
        parser.error(f"unknown --samplers {unknown}; choose from {', '.join(METHODS)}")
    return args


def main(argv: Sequence[str] | None = None) -> Report:
    """Parse flags, run both benchmarks, print the machine line and two tables; returns the report."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, vocoder, mel_fn = build(args.tiny, device)
    inputs = make_inputs(args.seconds, model.input_channel)
    frames = inputs["units"].shape[1]
    report = Report(frames, frames * PUBLIC_VOCODER["hop_size"] / PUBLIC_VOCODER["sampling_rate"])
    report.stages, report.mel, report.audio = bench_end_to_end(
        model, vocoder, mel_fn, inputs, args.k_step, args.speedup, args.method, args.repeats, device,
        report.audio_seconds)
    with torch.inference_mode():
        cond = model.embed(inputs["units"].to(device), inputs["f0"].to(device), inputs["volume"].to(device))
        gt_mel = mel_fn.get_mel(inputs["audio"].to(device)).transpose(1, 2)
    report.samplers = bench_samplers(model, cond, gt_mel, args.k_step, args.speedup, args.ddpm_steps, args.samplers,
                                     args.repeats, device, report.audio_seconds)
    size = "tiny" if args.tiny else "default"
    print(machine_description(device))
    print(f"{size} sizes, {frames} frames = {report.audio_seconds:.3f} s audio; "
          f"median of {args.repeats} after 1 warm-up")
    print(format_samplers(report.samplers, report.stages))
    print()
    print(format_stages(report.stages))
    return report


if __name__ == "__main__":
    main()
