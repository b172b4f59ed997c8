"""Real-time factor of the exported ONNX graph in onnxruntime vs PyTorch, on the CPU.

The model is ``SynthesizerTrn`` at the sizes of ``configs_template/config_template.json`` (``--tiny``:
a micro model for smoke tests) with seeded random weights and one speaker, weight norm folded. It is
exported with ``export.onnx.export_onnx`` exactly as ``onnx_export.py`` does (opset 16, 200 trace
frames, real source randomness) to a temporary folder. Three paths synthesise the same fixed
inputs (bench/synth_infer.py's ``make_inputs``: seeded units, a sung glide, 90 % voiced):

1. ``PyTorch infer``: ``SynthesizerTrn.infer`` (per-sample sine source), the toolkit's own path;
2. ``PyTorch export variant``: ``SynthesizerTrnOnnx`` (frame-rate source), what the graph computes;
3. ``onnxruntime``: the exported graph, ``CPUExecutionProvider``, intra-op threads = torch's threads;
4. ``Svc --onnx backend``: ``export.onnx.OnnxSynthesizer``, the graph `Svc(onnx=True)` runs (``infer``'s own
   random draws and per-sample source made in PyTorch and fed in), which must give ``infer``'s audio.

Prior noise: N(0, 1) x 0.35 fed to the graph and the export variant; ``infer`` draws its own. The allocator is
tuned as `Svc` tunes it (``core.runtime.tune_allocator``).

Run from the repository root::

    .venv/bin/python bench/onnx_infer.py --seconds 10 --repeats 3 --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import machine_description, markdown_table, round_robin  # noqa: E402

NOISE_SCALE = 0.35
NOISE_SEED = 4321
PATHS = ("PyTorch infer", "PyTorch export variant", "onnxruntime", "Svc --onnx backend")


@dataclass
class Result:
    """One path: median wall and process-CPU seconds per call, its audio [1, 1, N], audio seconds."""

    name: str
    seconds: float
    cpu_seconds: float
    audio: np.ndarray
    audio_seconds: float


def run_paths(calls: dict[str, Callable[[], np.ndarray]], repeats: int, audio_seconds: float) -> list[Result]:
    """One warm-up per path, then ``repeats`` timed calls taken round-robin; medians."""
    return [Result(name, wall, cpu, audio, audio_seconds)
            for name, (wall, cpu, audio) in round_robin(calls, repeats).items()]


def format_table(results: Sequence[Result]) -> str:
    """Markdown table: path, median s, RTF, CPU RTF, speed vs each PyTorch path, audio RMS, max |diff| vs infer."""
    base, variant = results[0], results[1]
    return markdown_table(
        ["path", "median s", "RTF", "CPU RTF", "speed vs PyTorch infer", "speed vs export variant",
         "CPU speed vs PyTorch infer", "audio RMS", "max abs diff vs infer"],
        [[r.name, f"{r.seconds:.3f}", f"{r.seconds / r.audio_seconds:.3f}", f"{r.cpu_seconds / r.audio_seconds:.3f}",
          f"{base.seconds / r.seconds:.2f}x", f"{variant.seconds / r.seconds:.2f}x",
          f"{base.cpu_seconds / r.cpu_seconds:.2f}x",
          f"{float(np.sqrt(np.mean(np.square(r.audio, dtype=np.float64)))):.4f}",
          f"{float(np.abs(r.audio - base.audio).max()):.3g}"] for r in results])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to synthesise")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per path (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads and onnxruntime intra-op threads (default: torch's)")
    parser.add_argument("--config", type=Path, default=None,
                        help="so-vits config.json (default: configs_template/config_template.json)")
    parser.add_argument("--tiny", action="store_true", help="micro model instead of the config's sizes (smoke test)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds <= 0:
        parser.error("--repeats must be >= 1 and --seconds > 0")
    return args


def main(argv: Sequence[str] | None = None) -> list[Result]:
    """Build, export, time the three paths; print machine line, export time and table; returns the results."""
    args = parse_args(argv)
    import onnxruntime as ort

    from bench.synth_infer import TINY_MODEL, BenchConfig, build_model, load_config, make_inputs
    from core.runtime import tune_allocator
    from export.model_onnx import SynthesizerTrnOnnx, export_onnx
    from export.onnx import OnnxSynthesizer

    tune_allocator()

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.tiny:
        cfg = BenchConfig(1025, 20, {**TINY_MODEL, "sampling_rate": 44100}, 44100, 512)
    else:
        cfg = load_config(args.config, 1)
    net = build_model(cfg)
    net.remove_weight_norm()
    model = SynthesizerTrnOnnx(net).eval()
    c, f0, uv, g = make_inputs(cfg, args.seconds)
    frames = c.size(2)
    audio_seconds = frames * cfg.hop_length / cfg.sampling_rate
    noise = NOISE_SCALE * torch.randn(1, net.inter_channels, frames,
                                      generator=torch.Generator().manual_seed(NOISE_SEED))
    graph_inputs = (c.transpose(1, 2).contiguous(), f0, torch.arange(1, frames + 1).unsqueeze(0), uv, noise,
                    torch.LongTensor([0]))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench_SoVits.onnx")
        start = time.perf_counter()
        export_onnx(model, path)
        export_seconds = time.perf_counter() - start
        size_mib = os.path.getsize(path) / 2 ** 20
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        # The backend keys its cached graph on the model and config files; placeholders stand in for them.
        Path(tmp, "G_0.pth").write_bytes(b"bench")
        Path(tmp, "config.json").write_text("{}")
        start = time.perf_counter()
        backend = OnnxSynthesizer(net, Path(tmp, "G_0.pth"), Path(tmp, "config.json"), threads)
        backend_export_seconds = time.perf_counter() - start
    names = [i.name for i in session.get_inputs()]
    feeds = {n: x.numpy() for n, x in zip(names, graph_inputs)}

    def torch_infer() -> np.ndarray:
        with torch.inference_mode():
            return net.infer(c, f0, uv, g=g, noice_scale=NOISE_SCALE)[0].numpy()

    def torch_variant() -> np.ndarray:
        with torch.inference_mode():
            return model(*graph_inputs).numpy()

    def onnxruntime() -> np.ndarray:
        return session.run(["audio"], feeds)[0]

    def svc_backend() -> np.ndarray:
        return backend.infer(c, f0, uv, g=g, noice_scale=NOISE_SCALE)[0].numpy()

    results = run_paths(dict(zip(PATHS, (torch_infer, torch_variant, onnxruntime, svc_backend))), args.repeats,
                        audio_seconds)
    print(machine_description(torch.device("cpu")) + f"; onnxruntime {ort.__version__} ({threads} intra-op threads)")
    print(f"model: {'--tiny' if args.tiny else args.config or 'config_template.json'} sizes, "
          f"{sum(p.numel() for p in net.parameters()):,} parameters; export {export_seconds:.1f} s, "
          f"graph {size_mib:.1f} MiB; Svc backend export + session {backend_export_seconds:.1f} s")
    print(f"{frames} frames = {audio_seconds:.3f} s audio; median of {args.repeats} after 1 warm-up, round-robin")
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
