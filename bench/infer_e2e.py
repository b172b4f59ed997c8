"""End-to-end conversion speed: a 60 s clip through `Svc.convert_file`, timed stage by stage.

Builds a temporary project: a default-size `SynthesizerTrn` (configs_template/config_template.json, one
speaker) with seeded random weights, and a full-size random ContentVec in the fairseq layout as
`pretrain/checkpoint_best_legacy_500.pt` (bench/preprocess.py's `install_encoder`). Then it loads `Svc`
and converts the reference clip `data/edge/long_slt_60s.wav` into a FLAC with `convert_file`.

Stages are timed through `Svc.stage_hook` (slicing, reading, piece preparation, F0, encoder, synthesizer,
writing, ...); "loading" is `Svc(...)` plus building the F0 predictor. RTF = stage seconds / seconds of
input audio (below 1 = faster than real time).

Run from the repository root::

    .venv/bin/python bench/infer_e2e.py [--seconds 60[,300,...]] [--f0_predictor fcpe|pm] [--threads N] [--device cpu]

Several lengths convert one after another with the same `Svc`, each from a clip looped or cropped to that
length, each with its own peak RSS (reset before it): the memory a long song needs beyond a short one.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import SHARED, load_average, machine_description, markdown_table, status_kib, sync  # noqa: E402
from core.runtime import plain  # noqa: E402

CLIP = SHARED / "data" / "edge" / "long_slt_60s.wav"
DEFAULT_CONFIG = ROOT / "configs_template" / "config_template.json"
SPEAKER = "bench"
# The stages a plain So-VITS conversion (no -cr, -shd, -eh) goes through.
STAGES = ("loading", "slicing", "reading", "piece preparation", "F0", "encoder", "synthesizer", "writing")


@dataclass
class StageClock:
    """Wall seconds and entries per stage, in order of first use; the device is synchronised around each."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.calls[name] = self.calls.get(name, 0) + 1


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
        """Time outside the timed stages (resampling to the model rate, cross-fades, Python)."""
        return self.total_s - sum(self.stages.values())

    def rtf(self, seconds: float) -> float:
        return seconds / self.audio_s


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
    """The clip, or its first `seconds` (the clip repeated as often as needed) written as 16-bit WAV in
    `workdir`: (path, its length in s)."""
    info = sf.info(str(src))
    if seconds is None or round(seconds * info.samplerate) == info.frames:
        return src, info.frames / info.samplerate
    data, rate = sf.read(str(src), dtype="float32", always_2d=True)
    frames = int(seconds * rate)
    data = np.tile(data, (-(-frames // len(data)), 1))[:frames]
    target = workdir / f"{src.stem}_{seconds:g}s.wav"
    sf.write(str(target), data, rate, subtype="PCM_16")
    return target, len(data) / rate


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
    hwm = status_kib("VmHWM")
    if hwm is None:
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    return hwm / 1024


def run(model_path: Path, config_path: Path, pretrain: Path, clips: Sequence[tuple[Path, float]], out_path: Path,
        f0_predictor: str, device: torch.device) -> list[Report]:
    """Load `Svc` and `convert_file` each clip (path, seconds) with its stage hook on a clock; one report per
    clip, the first one including the loading."""
    from inference.infer_tool import InferOptions, Svc

    reports, svc = [], None
    for clip, audio_s in clips:
        clock = StageClock(device)
        load_start = load_average()
        rss_before = status_kib("VmRSS") or 0
        reset_peak_rss()
        start = time.perf_counter()
        if svc is None:
            with clock.stage("loading"):
                svc = Svc(model_path, config_path, device=str(device), cluster_model_path="", pretrain_dir=pretrain)
        svc.stage_hook = clock.stage
        written = svc.convert_file(str(clip), out_path, SPEAKER, InferOptions(f0_predictor=f0_predictor))
        total = time.perf_counter() - start
        reports.append(Report(audio_s, dict(clock.seconds), dict(clock.calls), total, written, peak_rss_mb(),
                              rss_before / 1024, load_start, load_average(), f0_predictor))
        if sf.info(str(out_path)).frames != written:
            raise RuntimeError(f"convert_file reported {written} samples, the file has {sf.info(str(out_path)).frames}")
    return reports


def format_table(report: Report) -> str:
    """Markdown table: stage, calls, seconds, RTF, share of the total; then other and total rows."""
    rows = [(s, str(report.calls[s]), report.stages[s]) for s in report.stages]
    rows += [("other (resampling, cross-fade)", "", report.other_s), ("**total**", "", report.total_s)]
    return markdown_table(["stage", "calls", "seconds", "RTF", "share"],
                          [(name, calls, f"{sec:.2f}", f"{report.rtf(sec):.3f}", f"{sec / report.total_s:.0%}")
                           for name, calls, sec in rows])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", default=None,
                        help="comma-separated lengths: convert the clip cropped or looped to each (default: as is)")
    parser.add_argument("--f0_predictor", default="fcpe", choices=("fcpe", "pm"),
                        help="fcpe runs torchfcpe's bundled weights (offline)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--clip", type=Path, default=CLIP, help="input audio (default: the 60 s edge clip)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="so-vits config of the random model")
    args = parser.parse_args(argv)
    try:
        args.seconds = [None] if args.seconds is None else [float(x) for x in args.seconds.split(",")]
    except ValueError:
        parser.error(f"--seconds takes numbers, got {args.seconds!r}")
    if any(x is not None and x <= 0 for x in args.seconds):
        parser.error("--seconds must be > 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> list[Report]:
    """Parse flags, build the temporary project, convert each length; print machine line, tables and peak RSS."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_description(device) + f"; allocator tuning {'off (SOVITS_PLAIN)' if plain() else 'on'}", flush=True)
    # fcpe looks for pretrain/fcpe.pt relative to the working directory, as in 4.1: run in the temp project.
    with tempfile.TemporaryDirectory(prefix="bench_infer_e2e_") as tmp, contextlib.chdir(tmp):
        workdir = Path(tmp)
        start = time.perf_counter()
        model_path, config_path = build_project(workdir, args.config)
        clips = [crop_clip(args.clip, seconds, workdir) for seconds in args.seconds]
        print(f"building the random project took {time.perf_counter() - start:.1f} s (not counted)", flush=True)
        gc.collect()
        reports = run(model_path, config_path, workdir / "pretrain", clips, workdir / "out.flac",
                      args.f0_predictor, device)
    for report in reports:
        print(f"\n{report.audio_s:.2f} s of audio ({args.clip.name}), F0 predictor {args.f0_predictor}; "
              f"{report.samples_written} samples written; RTF = seconds / {report.audio_s:.2f} s")
        print(format_table(report))
        print(f"peak RSS {report.peak_rss_mb:.0f} MiB (RSS {report.rss_before_mb:.0f} MiB before); "
              f"load average {report.load_start} at the start, {report.load_end} at the end", flush=True)
    return reports


if __name__ == "__main__":
    main()
