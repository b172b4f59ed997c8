"""End-to-end conversion speed: a 60 s clip through `Svc.convert_file`, timed stage by stage.

Builds a temporary project: a default-size `SynthesizerTrn` (configs_template/config_template.json, one
speaker) with seeded random weights saved by `modules.checkpoint.save_checkpoint`, and a full-size random
ContentVec in the fairseq layout as `pretrain/checkpoint_best_legacy_500.pt` (bench/preprocess.py's
`install_encoder`). Then it loads `Svc` and converts `../shared/data/edge/long_slt_60s.wav` into a FLAC
with `convert_file`, the real song loop (inference/slice_loop.py, inference/slicer.py).

Stages are timed by wrapping, for the duration of the run only, the calls the toolkit makes: slicing
(`slice_source`), F0 (`compute_f0_uv` of the predictor `get_f0_predictor` builds), the speech encoder
(`hubert_model.encoder`), the synthesizer (`net_g_ms.infer`), piece preparation (`pcm16_piece`) and
writing (the output `SoundFile`: open, write, close); model loading is `Svc(...)` plus building the F0
predictor. RTF = stage seconds / seconds of input audio (below 1 = faster than real time).

Run from the repository root::

    .venv/bin/python bench/infer_e2e.py [--seconds 60] [--f0_predictor fcpe|pm] [--threads N] [--device cpu]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from unittest import mock

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "edge" / "long_slt_60s.wav"
DEFAULT_CONFIG = ROOT / "configs_template" / "config_template.json"
SPEAKER = "bench"
STAGES = ("loading", "slicing", "piece preparation", "F0", "encoder", "synthesizer", "writing")


@dataclass
class StageClock:
    """Wall seconds and call counts per stage; `device` is synchronised around each timed call."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    calls: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STAGES})

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds
        self.calls[stage] += 1

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` with its wall time (device synchronised) added to `stage` on every call."""
        def timed(*args: Any, **kw: Any) -> Any:
            self._sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self._sync()
                self.add(stage, time.perf_counter() - start)
        return timed


@dataclass
class Report:
    """One conversion: per-stage seconds, total wall seconds (loading + conversion), audio seconds, peak RSS."""

    audio_s: float
    stages: dict[str, float]
    calls: dict[str, int]
    total_s: float
    samples_written: int
    peak_rss_mb: float
    rss_before_mb: float
    load_start: str
    load_end: str
    f0_predictor: str

    @property
    def other_s(self) -> float:
        """Conversion time outside the timed stages (audio reads, resampling, cross-fades, Python)."""
        return self.total_s - sum(self.stages.values())

    def rtf(self, seconds: float) -> float:
        return seconds / self.audio_s


# ------------------------------------------------------------------------------------------------
# The temporary project
# ------------------------------------------------------------------------------------------------
def build_project(workdir: Path, config: Path) -> tuple[Path, Path]:
    """Random default-size model + config (one speaker) and random full-size ContentVec under `workdir`.

    Returns (G_*.pth path, config.json path); the encoder file goes to `workdir/pretrain`.
    """
    from bench.preprocess import install_encoder
    from bench.synth_infer import build_model, load_config
    from core.checkpoint import save_checkpoint

    raw = json.loads(config.read_text())
    raw["model"]["n_speakers"] = 1
    raw["spk"] = {SPEAKER: 0}
    cfg_path = workdir / "configs" / "config.json"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(raw, indent=2))
    model_path = workdir / "logs" / "44k" / "G_0.pth"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(build_model(load_config(cfg_path, 1)), None, 1e-4, 0, model_path)
    install_encoder(str(raw["model"].get("speech_encoder") or "vec768l12"), workdir / "pretrain")
    return model_path, cfg_path


def crop_clip(src: Path, seconds: float | None, workdir: Path) -> tuple[Path, float]:
    """The clip, or its first `seconds` written as 16-bit WAV in `workdir`: (path, its length in s)."""
    info = sf.info(str(src))
    if seconds is None or seconds * info.samplerate >= info.frames:
        return src, info.frames / info.samplerate
    data, rate = sf.read(str(src), frames=int(seconds * info.samplerate), dtype="float32", always_2d=True)
    target = workdir / f"{src.stem}_{seconds:g}s.wav"
    sf.write(str(target), data, rate, subtype="PCM_16")
    return target, len(data) / rate


# ------------------------------------------------------------------------------------------------
# Memory and load
# ------------------------------------------------------------------------------------------------
def _status_kb(field_name: str) -> float | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field_name + ":"):
            return float(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5), so building the random files does not
    count towards the peak; False where that is not possible (the peak then covers the whole process)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set (VmHWM, else ru_maxrss) in MiB."""
    hwm = _status_kb("VmHWM")
    if hwm is None:
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    return hwm / 1024


def load_average() -> str:
    loadavg = Path("/proc/loadavg")
    return " ".join(loadavg.read_text().split()[:3]) if loadavg.exists() else "?"


# ------------------------------------------------------------------------------------------------
# The timed run
# ------------------------------------------------------------------------------------------------
def _timed_soundfile(clock: StageClock) -> types.ModuleType:
    """A stand-in for `soundfile` inside infer_tool whose `SoundFile` times open / write / close; sf.read
    and sf.write (used for the PCM16 round trip) stay the real, untimed functions."""
    class TimedSoundFile(sf.SoundFile):
        def __init__(self, *args: Any, **kw: Any) -> None:
            clock.wrap("writing", super().__init__)(*args, **kw)

        def write(self, data: Any) -> None:
            clock.wrap("writing", super().write)(data)

        def close(self) -> None:
            clock.wrap("writing", super().close)()

    proxy = types.ModuleType("soundfile")
    proxy.__dict__.update(sf.__dict__)
    proxy.SoundFile = TimedSoundFile
    return proxy


def run(model_path: Path, config_path: Path, pretrain: Path, clip: Path, audio_s: float, out_path: Path,
        f0_predictor: str, device: torch.device) -> Report:
    """Load `Svc` and `convert_file` the clip with every stage wrapped; returns the timings."""
    import inference.infer_tool as infer_tool
    import inference.slice_loop as slice_loop
    from inference.infer_tool import InferOptions, Svc

    clock = StageClock(device)
    timed_f0 = clock.wrap("loading", infer_tool.get_f0_predictor)

    def build_f0(*args: Any, **kw: Any) -> Any:
        predictor = timed_f0(*args, **kw)
        predictor.compute_f0_uv = clock.wrap("F0", predictor.compute_f0_uv)
        return predictor

    load_start = load_average()
    rss_before = _status_kb("VmRSS") or 0.0
    reset_peak_rss()
    start = time.perf_counter()
    svc = clock.wrap("loading", Svc)(model_path, config_path, device=str(device), cluster_model_path="",
                                      pretrain_dir=pretrain)
    svc.hubert_model.encoder = clock.wrap("encoder", svc.hubert_model.encoder)
    svc.net_g_ms.infer = clock.wrap("synthesizer", svc.net_g_ms.infer)
    svc.pcm16_piece = clock.wrap("piece preparation", svc.pcm16_piece)
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(slice_loop, "slice_source",
                                                clock.wrap("slicing", slice_loop.slice_source)))
        patches.enter_context(mock.patch.object(infer_tool, "get_f0_predictor", build_f0))
        patches.enter_context(mock.patch.object(infer_tool, "sf", _timed_soundfile(clock)))
        written = svc.convert_file(str(clip), out_path, SPEAKER, InferOptions(f0_predictor=f0_predictor))
    total = time.perf_counter() - start
    return Report(audio_s, dict(clock.seconds), dict(clock.calls), total, written, peak_rss_mb(),
                  rss_before / 1024, load_start, load_average(), f0_predictor)


def format_table(report: Report) -> str:
    """Markdown table: stage, calls, seconds, RTF, share of the total; then other and total rows."""
    lines = ["| stage | calls | seconds | RTF | share |", "|---|---:|---:|---:|---:|"]
    rows = [(s, str(report.calls[s]), report.stages[s]) for s in STAGES]
    rows += [("other (reads, resampling, cross-fade)", "", report.other_s), ("**total**", "", report.total_s)]
    for name, calls, seconds in rows:
        lines.append(f"| {name} | {calls} | {seconds:.2f} | {report.rtf(seconds):.3f} | "
                     f"{seconds / report.total_s:.0%} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="convert only the first N s of the clip")
    parser.add_argument("--f0_predictor", default="fcpe", choices=("fcpe", "pm"),
                        help="fcpe runs torchfcpe's bundled weights (offline)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--clip", type=Path, default=CLIP, help="input audio (default: the 60 s edge clip)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="so-vits config of the random model")
    args = parser.parse_args(argv)
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> Report:
    """Parse flags, build the temporary project, convert, print machine line, table and peak RSS."""
    args = parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.synth_infer import machine_description

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_description(device), flush=True)
    # fcpe looks for pretrain/fcpe.pt relative to the working directory, as in 4.1: run in the temp project.
    with tempfile.TemporaryDirectory(prefix="bench_infer_e2e_") as tmp, contextlib.chdir(tmp):
        workdir = Path(tmp)
        start = time.perf_counter()
        model_path, config_path = build_project(workdir, args.config)
        clip, audio_s = crop_clip(args.clip, args.seconds, workdir)
        print(f"building the random project took {time.perf_counter() - start:.1f} s (not counted)", flush=True)
        gc.collect()
        report = run(model_path, config_path, workdir / "pretrain", clip, audio_s, workdir / "out.flac",
                     args.f0_predictor, device)
        written = sf.info(str(workdir / "out.flac")).frames
        if written != report.samples_written:
            raise RuntimeError(f"convert_file reported {report.samples_written} samples, the file has {written}")
    print(f"{audio_s:.2f} s of audio ({args.clip.name}), F0 predictor {args.f0_predictor}; "
          f"{report.samples_written} samples written; RTF = seconds / {audio_s:.2f} s")
    print(format_table(report))
    print(f"peak RSS {report.peak_rss_mb:.0f} MiB (RSS {report.rss_before_mb:.0f} MiB before loading); "
          f"load average {report.load_start} at the start, {report.load_end} at the end", flush=True)
    return report


if __name__ == "__main__":
    main()
