"""Latency of the web page's Live tab: the work behind it, in process, against the streaming engine alone.

For each model size (tiny and default config, seeded random weights, one speaker, full-size random
ContentVec: infer_e2e's `build_project`) a voice is resampled to 48 kHz, 16-bit (what a browser sends) and
fed to `webui.live.LiveSession` in 0.25 s pieces, as the page receives them; the pieces that complete a
chunk are timed (resampling, gathering and converting: the tab's work per chunk). The baseline, in turns
with it, is `StreamConverter.process` on the same chunks at the model's rate. Latency shown on the page =
chunk + crossfade + the per-chunk time; RTF = per-chunk time / chunk length. Two chunks per length are
warm-up and not counted. FCPE, crossfaded mode (0.05 s), 1 thread.

Run from the repository root::

    .venv/bin/python bench/webui_live.py [--chunks 0.5,1.0] [--configs tiny,default] [--count 16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import load_average, machine_description, markdown_table  # noqa: E402
from bench.realtime import CLIP, CONFIGS  # noqa: E402
from inference.streaming import StreamConverter  # noqa: E402
from webui.live import LiveOptions, LiveSession, to_int16  # noqa: E402
from webui.state import ModelFiles, ModelSlot  # noqa: E402

PIECE_SECONDS, MIC_RATE, WARM_UP = 0.25, 48000, 2
HEADER = ("config", "chunk s", "n", "tab p50 s", "tab p95 s", "engine p50 s", "tab / engine", "RTF",
          "latency shown s")


def measure(name: str, slot: ModelSlot, chunk_s: float, count: int, voice: np.ndarray, rate: int) -> list:
    """One row: `voice` (at `rate`) through the Live tab's session and through the engine alone."""
    speaker = next(iter(slot.svc.spk2id))
    options = LiveOptions(speaker, chunk_seconds=chunk_s)
    live, engine = LiveSession(), StreamConverter(slot.svc)
    live.start(slot, options)
    mic = to_int16(soxr.resample(voice, rate, MIC_RATE))
    voice = soxr.resample(voice, rate, engine.sample_rate)
    step, n = round(PIECE_SECONDS * MIC_RATE), round(chunk_s * engine.sample_rate)
    tab, alone, pos, done = [], [], 0, 0
    while done < count + WARM_UP:
        began = time.perf_counter()
        out = live.feed(slot, MIC_RATE, mic[pos:pos + step], options)
        spent = time.perf_counter() - began
        pos += step
        if len(out):  # a piece that completed a chunk (pieces are shorter than a chunk: one at most)
            began = time.perf_counter()
            engine.process(voice[done * n:(done + 1) * n], speaker, 0)
            if done >= WARM_UP:
                tab.append(spent)
                alone.append(time.perf_counter() - began)
            done += 1
    p50, engine_p50 = statistics.median(tab), statistics.median(alone)
    return [name, chunk_s, len(tab), f"{p50:.3f}", f"{np.percentile(tab, 95):.3f}", f"{engine_p50:.3f}",
            f"{p50 / engine_p50:.2f}", f"{p50 / chunk_s:.2f}", f"{chunk_s + engine.delay_seconds + p50:.2f}"]


def main(argv: Sequence[str] | None = None) -> list[list]:
    import torch

    from bench.infer_e2e import build_project

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", default="0.5,1.0", help="chunk lengths in seconds, comma-separated")
    p.add_argument("--configs", default="tiny,default", help="model sizes: tiny, default")
    p.add_argument("--count", type=int, default=16, help="timed chunks per row")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(machine_description(torch.device("cpu")), flush=True)
    voice, rate = sf.read(CLIP, dtype="float32")
    rows = []
    for name in args.configs.split(","):
        with tempfile.TemporaryDirectory(prefix="bench_live_") as tmp:
            model, config = build_project(Path(tmp), CONFIGS[name])
            os.chdir(tmp)  # the page loads from its project folder: pretrain/ holds the encoder
            slot = ModelSlot()
            slot.load(ModelFiles(str(model), str(config)), "cpu")
            for chunk_s in (float(c) for c in args.chunks.split(",")):
                load = load_average()
                rows.append(measure(name, slot, chunk_s, args.count, voice, rate))
                print(markdown_table(HEADER, [rows[-1]]).splitlines()[-1],
                      f"(load average {load} -> {load_average()})", flush=True)
            slot.unload()
            os.chdir(ROOT)
    print(markdown_table(HEADER, rows))
    return rows


if __name__ == "__main__":
    main()
