"""Speed of ``SynthesizerTrn.infer``: the unoptimised path against each optimisation, in the same run.

Random weights under a fixed seed and fixed synthetic inputs (seeded N(0, 1) content features, a
sung glide with vibrato, mostly voiced), so the figures depend only on the network sizes, the
machine and the thread count. Every variant runs the model as the inference loader prepares it
(``remove_weight_norm()``) with the same ``infer`` seed, so their audio can be compared sample by
sample. The allocator settings are process-wide, so the variants run in two worker processes (one with
``SOVITS_PLAIN=1``, one tuned), driven call by call in turns.

Run from the repository root::

    .venv/bin/python bench/synth_infer.py --seconds 10 --repeats 5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import SHARED, load_average, machine_description, markdown_table, sync  # noqa: E402

__all__ = ["machine_description"]  # re-exported: other benches print the same machine line
DEFAULT_CONFIG = ROOT / "configs_template" / "config_template.json"
# Used while configs_template/ is absent: the recorded 4.1 default model config.
FALLBACK_MANIFEST = SHARED / "fixtures" / "sovits41" / "manifests" / "synthesizer_default.json"
WEIGHT_SEED = 1234
INPUT_SEED = 20240
# A generator of a few thousand values with every block of the real one, for smoke runs of the benches.
TINY_MODEL = {
    "inter_channels": 8, "hidden_channels": 8, "filter_channels": 16, "n_heads": 2, "n_layers": 1,
    "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]], "upsample_rates": [8, 8, 2, 2, 2],
    "upsample_initial_channel": 32, "upsample_kernel_sizes": [16, 16, 4, 4, 4], "n_layers_q": 1,
    "n_layers_trans_flow": 1, "n_flow_layer": 1, "use_spectral_norm": False, "gin_channels": 8,
    "ssl_dim": 16, "n_speakers": 1, "vocoder_name": "nsf-hifigan", "speech_encoder": "vec768l12",
    "speaker_embedding": False, "vol_embedding": False, "use_depthwise_conv": False,
    "flow_share_parameter": False, "use_automatic_f0_prediction": True, "use_transformer_flow": False,
}
INFER_SEED = 52468
# Trained flows are far from the identity; the zero-initialised coupling outputs get this std.
FLOW_POST_STD = 0.02
VARIANTS = ("plain", "allocator", "inplace", "fast", "bf16")
LABELS = {"plain": "unoptimised (SOVITS_PLAIN=1)", "allocator": "allocator tuned", "inplace": "allocator + in-place",
          "fast": "allocator + in-place + conv forms", "bf16": "allocator + in-place + conv forms, bf16 autocast"}
WORKER = {"plain": "plain", "allocator": "tuned", "inplace": "tuned", "fast": "tuned", "bf16": "tuned"}


@dataclass
class BenchConfig:
    """What the bench needs from a so-vits config: constructor arguments and audio framing."""

    spec_channels: int
    segment_size: int
    model: dict
    sampling_rate: int
    hop_length: int


@dataclass
class Result:
    """One variant: median wall and process-CPU time of ``infer`` (s), its audio [1, 1, N], audio length (s)."""

    name: str
    seconds: float
    cpu_seconds: float
    audio: Tensor
    audio_seconds: float


def load_config(path: Path | None, n_speakers: int) -> BenchConfig:
    """Read a so-vits ``config.json`` (or the fallback manifest) and override ``n_speakers``."""
    if path is None:
        path = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else FALLBACK_MANIFEST
    raw = json.loads(Path(path).read_text())
    if "model_config" in raw:  # a synthesizer manifest: 4.1 default data section
        model = dict(raw["model_config"])
        ctor = raw["constructor"]
        spec_channels, segment_size, sr, hop = ctor["spec_channels"], ctor["segment_size"], 44100, 512
    else:
        model = dict(raw["model"])
        data = raw["data"]
        sr, hop = int(data["sampling_rate"]), int(data["hop_length"])
        spec_channels = int(data["filter_length"]) // 2 + 1
        segment_size = int(raw["train"]["segment_size"]) // hop
    model["n_speakers"] = n_speakers
    model.setdefault("sampling_rate", sr)
    return BenchConfig(spec_channels, segment_size, model, sr, hop)


def build_model(cfg: BenchConfig, seed: int = WEIGHT_SEED) -> nn.Module:
    """SynthesizerTrn with seeded random weights, in eval mode, on the CPU."""
    from core.schema import model_section
    from models import SynthesizerTrn

    torch.manual_seed(seed)
    net = SynthesizerTrn(cfg.spec_channels, cfg.segment_size, **model_section(cfg.model).network_args())
    with torch.no_grad():
        for name, param in net.flow.named_parameters():
            if ".post." in name:
                param.normal_(0.0, FLOW_POST_STD)
    return net.eval()


def make_inputs(cfg: BenchConfig, seconds: float, seed: int = INPUT_SEED,
                extra_frames: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fixed inputs for ``seconds`` of audio: c [1, ssl, T], f0 [1, T] Hz, uv [1, T], g [[0]].

    T = floor(seconds * sr / hop) + extra_frames. F0 glides from 220 to 440 Hz and back with 5.5 Hz, 30-cent
    vibrato; every 40th frame starts a 4-frame unvoiced gap (f0 = 0, uv = 0).
    """
    frames = max(1, int(math.floor(seconds * cfg.sampling_rate / cfg.hop_length))) + extra_frames
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(1, int(cfg.model["ssl_dim"]), frames, generator=gen)
    t = torch.arange(frames, dtype=torch.float64) * cfg.hop_length / cfg.sampling_rate
    phase = torch.arange(frames, dtype=torch.float64) / max(frames - 1, 1)
    semitones = 12.0 * torch.sin(math.pi * phase) + 0.3 * torch.sin(2 * math.pi * 5.5 * t)
    f0 = 220.0 * torch.pow(2.0, semitones / 12.0)
    uv = ((torch.arange(frames) % 40) >= 4).to(torch.float64)
    f0 = (f0 * uv).float().unsqueeze(0)
    return c, f0, uv.float().unsqueeze(0), torch.LongTensor([[0]])


def _infer(model: nn.Module, inputs: Sequence[Tensor], context: Callable[[], ContextManager]) -> Tensor:
    """One seeded ``infer`` call: audio [1, 1, N]."""
    c, f0, uv, g = inputs
    with torch.inference_mode(), context():
        return model.infer(c, f0, uv, g=g, noice_scale=0.35, seed=INFER_SEED)[0]


def _worker(conn, kind: str, cfg: BenchConfig, seconds: float, threads: int | None, device: str) -> None:
    """A process holding the prepared model: receives variant names, answers (wall s, CPU s, audio) per call.
    kind "plain" runs with SOVITS_PLAIN=1 (glibc's default allocator); "tuned" sets the allocator up first."""
    import vdecoder.hifigan.models as decoder
    from core.runtime import bf16_problem, tune_allocator

    conv_forms = decoder.conv_forms

    if kind == "plain":
        os.environ["SOVITS_PLAIN"] = "1"
    tune_allocator()
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    model = build_model(cfg).to(dev)
    model.remove_weight_norm()
    conn.send(bf16_problem(dev))
    while (request := conn.recv()) is not None:
        name, extra_frames = request
        inputs = [x.to(dev) for x in make_inputs(cfg, seconds, extra_frames=extra_frames)]
        os.environ["SOVITS_PLAIN"] = "1" if name in ("plain", "allocator") else ""
        decoder.conv_forms = (lambda x: False) if name == "inplace" else conv_forms  # the standard convolutions
        context = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if name == "bf16" else nullcontext
        sync(dev)
        start, cpu_start = time.perf_counter(), time.process_time()
        audio = _infer(model, inputs, context)
        sync(dev)
        conn.send((time.perf_counter() - start, time.process_time() - cpu_start, audio.float().cpu()))


def run_variants(cfg: BenchConfig, seconds: float, repeats: int, device: torch.device, threads: int | None,
                 names: Sequence[str] = VARIANTS) -> tuple[list[Result], str | None]:
    """Time "plain" plus the chosen variants: one warm-up call each, then ``repeats`` calls in turns (outside
    load hits all alike), medians. Round r adds r frames to every variant's input, so each call has a new
    length, as the slices of a song have (oneDNN builds its convolutions for every new shape). Returns the
    results (plain first; audio of the warm-up calls) and why bf16 was left out (or None)."""
    chosen = ["plain"] + [n for n in names if n != "plain"]
    ctx = mp.get_context("spawn")
    workers = {}
    try:
        for kind in sorted({WORKER[n] for n in chosen}):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker, args=(child, kind, cfg, seconds, threads, str(device)), daemon=True)
            process.start()
            workers[kind] = (parent, process)
        bf16_refused = [conn.recv() for conn, _ in workers.values()][-1]
        if bf16_refused and "bf16" in chosen:
            chosen.remove("bf16")

        def call(name: str, extra_frames: int) -> tuple[float, float, Tensor]:
            conn = workers[WORKER[name]][0]
            conn.send((name, extra_frames))
            return conn.recv()

        first = {name: call(name, 0)[2] for name in chosen}
        wall: dict[str, list[float]] = {n: [] for n in chosen}
        cpu: dict[str, list[float]] = {n: [] for n in chosen}
        for round_ in range(1, repeats + 1):
            for name in chosen:
                seconds_wall, seconds_cpu, _ = call(name, round_)
                wall[name].append(seconds_wall)
                cpu[name].append(seconds_cpu)
    finally:
        for conn, process in workers.values():
            conn.send(None)
            process.join(60)
    audio_seconds = first["plain"].shape[-1] / cfg.sampling_rate
    return [Result(LABELS[n], statistics.median(wall[n]), statistics.median(cpu[n]), first[n], audio_seconds)
            for n in chosen], bf16_refused


def format_table(results: Sequence[Result]) -> str:
    """Markdown table: variant, median s, RTF, CPU RTF (steadier under load), speed-ups and max |diff| vs plain."""
    base = results[0]
    return markdown_table(
        ["variant", "median s", "RTF", "CPU RTF", "speed vs plain (wall)", "speed vs plain (CPU)",
         "max abs diff vs plain"],
        [[r.name, f"{r.seconds:.3f}", f"{r.seconds / r.audio_seconds:.3f}", f"{r.cpu_seconds / r.audio_seconds:.3f}",
          f"{base.seconds / r.seconds:.2f}x", f"{base.cpu_seconds / r.cpu_seconds:.2f}x",
          f"{float((r.audio - base.audio).abs().max()):.3g}"] for r in results])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to synthesise")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--config", type=Path, default=None,
                        help="so-vits config.json (default: configs_template/config_template.json)")
    parser.add_argument("--speakers", type=int, default=1, help="n_speakers of the random model")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)}; plain always runs (the baseline)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds <= 0:
        parser.error("--repeats must be >= 1 and --seconds > 0")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def main(argv: Sequence[str] | None = None) -> list[Result]:
    """Parse flags, run the variants, print the machine line and the table; returns the results."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(args.config, args.speakers)
    load_start = load_average()
    results, bf16_refused = run_variants(cfg, args.seconds, args.repeats, device, args.threads, args.variants)
    print(machine_description(device) + f" (at the start: {load_start})")
    frames = max(1, int(math.floor(args.seconds * cfg.sampling_rate / cfg.hop_length)))
    print(f"{frames} frames = {results[0].audio_seconds:.3f} s audio; median of {args.repeats} after 1 warm-up, "
          "in turns")
    if bf16_refused and "bf16" in args.variants:
        print(f"bf16 left out: {bf16_refused}")
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
