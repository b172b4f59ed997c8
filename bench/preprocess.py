"""Preprocessing speed: F0 predictors, speech encoders and the whole `preprocess_hubert_f0` step.

Figures are "x real time" (audio seconds per wall second) and "x per CPU s" (per CPU second of this
process and its workers: steadier on a shared machine). Nothing is downloaded: speech encoders get
seeded random weights in the released files' sizes and layouts (ONNX names: our encoder exported);
RMVPE uses `pretrain/rmvpe.pt` if present, else a full-size random network from the reference
fixtures' recipe; fcpe and crepe use their bundled weights. Clips: the reference `voices/*/*.wav`.

Run from the repository root::

    .venv/bin/python bench/preprocess.py --clips 4 --threads 2 [--encoders all]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
from bench.common import SHARED, load_average, machine_description, markdown_table, timed  # noqa: E402
from modules.F0Predictor import F0_PREDICTORS as F0_NAMES  # noqa: E402

VOICES = SHARED / "data" / "voices"
RMVPE_RECIPE = SHARED / "fixtures" / "sovits41" / "f0"
WEIGHT_SEED = 1234
SR, HOP, ENCODER_SR = 44100, 512, 16000

# Architectures of the released files (fixtures/vencoder/manifest_*_full.json list their tensors).
CONTENTVEC_BASE: dict[str, Any] = {  # ContentVec legacy 500 = HuBERT base; HuBERT-Soft has the same body
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", "extractor_mode": "default",
    "conv_bias": False, "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "activation_fn": "gelu", "layer_norm_first": False, "conv_pos": 128,
    "conv_pos_groups": 16,
}
HUBERT_LARGE: dict[str, Any] = {**CONTENTVEC_BASE, "extractor_mode": "layer_norm", "encoder_layers": 24,
                                "encoder_embed_dim": 1024, "encoder_ffn_embed_dim": 4096,
                                "encoder_attention_heads": 16, "layer_norm_first": True}
WAVLM_BASE_PLUS: dict[str, Any] = {**CONTENTVEC_BASE, "relative_position_embedding": True, "num_buckets": 320,
                                   "max_distance": 800, "gru_rel_pos": True, "normalize": False}
_WHISPER_MEDIUM = {"n_mels": 80, "n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 1024, "n_audio_head": 16,
                   "n_audio_layer": 24, "n_text_ctx": 448, "n_text_state": 1024, "n_text_head": 16, "n_text_layer": 24}
WHISPER_DIMS: dict[str, dict[str, int]] = {
    "whisper-ppg": _WHISPER_MEDIUM,
    "whisper-ppg-large": {**_WHISPER_MEDIUM, "n_audio_state": 1280, "n_audio_head": 20, "n_audio_layer": 32,
                          "n_text_state": 1280, "n_text_head": 20, "n_text_layer": 32},
}
# The real DPHuBERT-sp0.75 keeps a learned subset of each layer (~24 M values); that pattern is not
# known here, so the bench runs the unpruned HuBERT-base sizes (94 M): an upper bound on its cost.
DPHUBERT_UNPRUNED: dict[str, Any] = {
    "extractor_mode": "group_norm", "extractor_conv_layer_config": [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2,
    "extractor_conv_bias": False, "encoder_embed_dim": 768, "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16, "encoder_num_layers": 12, "encoder_use_attention": [True] * 12,
    "encoder_use_feed_forward": [True] * 12, "encoder_num_heads": [12] * 12, "encoder_head_dim": 64,
    "encoder_ff_interm_features": [3072] * 12, "encoder_layer_norm_first": False, "aux_num_out": None,
    "normalize_waveform": False,
}
FINAL_DIM = {"contentvec": 256, "cnhubert": 768}  # final_proj widths (training head, kept in the files)
LABEL_ROWS = 504  # 500 k-means units + 4 specials
# ONNX name -> (source encoder whose weights it exports, output layer (None = all), final_proj, pad 40)
ONNX_GRAPHS: dict[str, tuple[str, int | None, bool, bool]] = {
    "vec256l9-onnx": ("vec768l12", 9, True, False), "vec256l12-onnx": ("vec768l12", 12, True, False),
    "vec768l9-onnx": ("vec768l12", 9, False, False), "vec768l12-onnx": ("vec768l12", 12, False, False),
    "hubertsoft-onnx": ("hubertsoft", None, True, True),
}
_SOFT_NAMES = [  # our fairseq layout -> bshall's HuBERT-Soft names (first match wins)
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.weight$", r"feature_extractor.conv\1.weight"),
    (r"^feature_extractor\.conv_layers\.0\.2\.", "feature_extractor.norm0."),
    (r"^layer_norm\.", "feature_projection.norm."), (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^encoder\.pos_conv\.0\.", "positional_embedding.conv."), (r"^encoder\.layer_norm\.", "norm."),
    (r"^(encoder\.layers\.\d+\.)fc1\.", r"\1linear1."), (r"^(encoder\.layers\.\d+\.)fc2\.", r"\1linear2."),
    (r"^(encoder\.layers\.\d+\.)self_attn_layer_norm\.", r"\1norm1."),
    (r"^(encoder\.layers\.\d+\.)final_layer_norm\.", r"\1norm2."), (r"^final_proj\.", "proj."),
]
Shapes = dict[str, tuple[int, ...]]


@dataclass
class RandomFile:
    """A pretrained file to fake: its tensors (key -> shape, file names) and how torch.save wraps them."""

    shapes: Shapes
    wrap: Callable[[dict[str, torch.Tensor]], Any]
    dtype: torch.dtype = torch.float32


@dataclass
class Clip:
    """One benchmark clip: 44.1 kHz samples [N] (float32) and the 16 kHz copy the encoders get [N16]."""

    path: Path
    wav: np.ndarray
    wav16: torch.Tensor

    @property
    def seconds(self) -> float:
        return len(self.wav) / SR


@dataclass
class Row:
    """One measured (or skipped) item; `setup_s` = building / loading it, not part of the figure."""

    section: str
    name: str
    setup_s: float = math.nan
    audio_s: float = 0.0
    wall_s: float = math.nan
    cpu_s: float = math.nan
    note: str = ""

    @property
    def realtime(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def per_cpu(self) -> float:
        return self.audio_s / self.cpu_s if self.cpu_s > 0 else math.nan


def _meta_shapes(build: Callable[[], nn.Module]) -> Shapes:
    with torch.device("meta"):  # shapes only: nothing is allocated
        module = build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _soft_layout(shapes: Shapes) -> Shapes:
    """Our HubertModel keys -> HuBERT-Soft file keys, q/k/v packed into `in_proj_*` ([3E, ...])."""
    out: Shapes = {"masked_spec_embed": (shapes["encoder.layer_norm.weight"][0],)}
    for key, shape in shapes.items():
        packed = re.match(r"^(encoder\.layers\.\d+\.self_attn\.)([qkv])_proj\.(weight|bias)$", key)
        if packed:
            if packed[2] == "q":
                out[f"{packed[1]}in_proj_{packed[3]}"] = (3 * shape[0], *shape[1:])
            continue
        for pattern, repl in _SOFT_NAMES:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        out[key] = shape
    out["label_embedding.weight"] = (100, shapes["final_proj.weight"][0])  # 100 k-means units
    return out


def encoder_file(name: str) -> RandomFile:
    """Layout of the released file behind a PyTorch speech encoder name (not the *-onnx ones)."""
    from vencoder.dphubert import DPHubertModel
    from vencoder.hubert import HubertConfig, HubertModel
    from vencoder.wavlm import WavLMConfig, build_wavlm
    from vencoder.whisper import WhisperAudioEncoder, WhisperDims

    if name in ("vec768l12", "vec256l9", "cnhubertlarge"):
        large = name == "cnhubertlarge"
        cfg = HubertConfig(**(HUBERT_LARGE if large else CONTENTVEC_BASE))
        final = FINAL_DIM["cnhubert" if large else "contentvec"]
        shapes = {"mask_emb": (cfg.encoder_embed_dim,), "label_embs_concat": (LABEL_ROWS, final),
                  **_meta_shapes(lambda: HubertModel(cfg, final_dim=final))}
        model_cfg = {"_name": "hubert", **asdict(cfg), "final_dim": final}
        return RandomFile(shapes, lambda sd: {"cfg": {"model": model_cfg}, "model": sd})
    if name == "hubertsoft":
        cfg = HubertConfig(**CONTENTVEC_BASE)
        shapes = _soft_layout(_meta_shapes(lambda: HubertModel(cfg, final_dim=FINAL_DIM["contentvec"])))
        return RandomFile(shapes, lambda sd: sd)  # a plain state dict
    if name == "wavlmbase+":
        wcfg = WavLMConfig(**WAVLM_BASE_PLUS)
        shapes = {"mask_emb": (wcfg.encoder_embed_dim,), **_meta_shapes(lambda: build_wavlm(wcfg))}
        return RandomFile(shapes, lambda sd: {"cfg": asdict(wcfg), "model": sd})
    if name in WHISPER_DIMS:
        dims = WHISPER_DIMS[name]
        audio = WhisperDims.from_dict(dims)
        # Only the audio encoder: whisper-ppg ignores the decoder tensors of the real file.
        shapes = {f"encoder.{k}": s for k, s in _meta_shapes(lambda: WhisperAudioEncoder(audio)).items()}
        return RandomFile(shapes, lambda sd: {"dims": dims, "model_state_dict": sd}, torch.float16)
    if name == "dphubert":
        shapes = {}
        for key, shape in _meta_shapes(lambda: DPHubertModel(DPHUBERT_UNPRUNED)).items():
            key = re.sub(r"^(feature_extractor\.conv_layers\.\d+)\.0\.", r"\1.conv.", key)
            shapes[re.sub(r"^(feature_extractor\.conv_layers\.\d+)\.2\.", r"\1.layer_norm.", key)] = shape
        return RandomFile(shapes, lambda sd: {"config": DPHUBERT_UNPRUNED, "state_dict": sd})
    raise ValueError(f"no random full-size layout for speech encoder {name!r}")


def random_state(shapes: Shapes, seed: int = WEIGHT_SEED, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Seeded tensors for `shapes`: matrices / kernels U(+-sqrt(3 / fan_in)), 1-d weights and weight-norm
    gains 0.9-1.1, other vectors +-0.1, so every layer keeps activations of order one."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        u = torch.rand(shape, generator=gen)
        if len(shape) >= 2 and not key.endswith("weight_g"):
            value = (2 * u - 1) * math.sqrt(3.0 / max(1, math.prod(shape[1:])))
        elif key.endswith(("weight", "weight_g")):
            value = 0.9 + 0.2 * u
        else:
            value = 0.2 * u - 0.1
        out[key] = value.to(dtype)
    return out


class _OnnxGraph(nn.Module):
    """What a 4.1 ONNX encoder file computes: source [1, 1, N] -> embed [1, T, dim]."""

    def __init__(self, model: nn.Module, layer: int | None, proj: bool, pad: bool) -> None:
        super().__init__()
        self.model, self.layer, self.proj, self.pad = model, layer, proj, pad

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        x = source[:, 0]
        if self.pad:  # HuBERT-Soft pads inside its graph
            x = F.pad(x, (40, 40))
        h = self.model(x, self.layer)
        return self.model.final_proj(h) if self.proj else h


def install_encoder(name: str, pretrain: Path, seed: int = WEIGHT_SEED) -> Path:
    """Write the random full-size file `get_speech_encoder(name, pretrain_dir=pretrain)` reads; returns it."""
    from vencoder import _ENCODERS  # the registry's file names

    target = pretrain / _ENCODERS[name].file
    if target.exists():  # vec768l12 and vec256l9 share one file
        return target
    pretrain.mkdir(parents=True, exist_ok=True)
    if name not in ONNX_GRAPHS:
        layout = encoder_file(name)
        torch.save(layout.wrap(random_state(layout.shapes, seed, layout.dtype)), target)
        return target
    from vencoder.hubert import load_hubert_checkpoint
    from vencoder.hubert_soft import load_hubert_soft

    source, layer, proj, pad = ONNX_GRAPHS[name]
    path = install_encoder(source, pretrain, seed)
    model = load_hubert_soft(path) if source == "hubertsoft" else load_hubert_checkpoint(path)
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(_OnnxGraph(model, layer, proj, pad).eval(), (torch.zeros(1, 1, 16000),), str(target),
                          dynamo=False, opset_version=17, input_names=["source"], output_names=["embed"],
                          dynamic_axes={"source": {2: "samples"}, "embed": {1: "frames"}})
    return target


def install_rmvpe(workdir: Path) -> str | None:
    """Put `pretrain/rmvpe.pt` under `workdir`: the repository's file, else the fixture recipe's
    full-size random network. Returns where it came from, None when neither is available."""
    target = workdir / "pretrain" / "rmvpe.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    real = ROOT / "pretrain" / "rmvpe.pt"
    if real.is_file():
        target.symlink_to(real)
        return "repository pretrain/rmvpe.pt"
    if not (RMVPE_RECIPE / "det_weights.py").is_file():
        return None
    spec = importlib.util.spec_from_file_location("det_weights", RMVPE_RECIPE / "det_weights.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    manifest = json.loads((RMVPE_RECIPE / "rmvpe_manifest.json").read_text())
    state = recipe.build_state_dict(manifest["state_dict"], manifest["weight_seed"])
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, target)
    return "random full-size weights (fixture recipe)"


def _time_clips(fn: Callable[[Clip], Any], clips: Sequence[Clip], device: str) -> tuple[float, float, Any]:
    """One untimed warm-up call on the first clip, then one timed pass: (wall s, CPU s, warm-up result)."""
    first = fn(clips[0])
    wall, cpu, _ = timed(lambda: [fn(clip) for clip in clips], device)
    return wall, cpu, first


def load_clips(n: int) -> list[Clip]:
    """The first `n` clips of the reference voices, taken round-robin over the speakers."""
    from modules.audio_io import read_audio_mono, resample_audio

    speakers = [sorted(d.glob("*.wav")) for d in sorted(VOICES.iterdir()) if d.is_dir()] if VOICES.is_dir() else []
    order = [p for group in zip(*speakers) for p in group] if speakers else []
    if len(order) < n:
        raise FileNotFoundError(f"need {n} clips under {VOICES}/<speaker>/, found {len(order)}")
    clips = []
    for path in order[:n]:
        wav, rate = read_audio_mono(path)
        wav = resample_audio(wav, rate, SR)
        clips.append(Clip(path, wav, torch.from_numpy(resample_audio(wav, SR, ENCODER_SR))))
    return clips


def bench_f0(names: Sequence[str], clips: Sequence[Clip], device: str, rmvpe_source: str | None) -> list[Row]:
    """`get_f0_predictor(name, 512, 44100, device, 0.05).compute_f0_uv(wav)` on every clip."""
    from modules.F0Predictor import get_f0_predictor

    rows = []
    for name in names:
        row = Row("F0", name, audio_s=sum(c.seconds for c in clips))
        try:
            row.setup_s, _, predictor = timed(lambda: get_f0_predictor(name, hop_length=HOP, sampling_rate=SR,
                                                                       device=device, threshold=0.05))
        except (FileNotFoundError, ImportError, RuntimeError) as err:
            rows.append(Row("F0", name, note=f"skipped: {str(err)[:120]}"))
            continue
        row.wall_s, row.cpu_s, (f0, uv) = _time_clips(lambda c: predictor.compute_f0_uv(c.wav), clips, device)
        row.note = f"{float(np.mean(uv > 0)):.0%} voiced"
        if name == "rmvpe":
            row.note += f"; {rmvpe_source}"
        rows.append(row)
        del predictor
        gc.collect()
    return rows


def bench_encoders(names: Sequence[str], clips: Sequence[Clip], device: str, pretrain: Path) -> list[Row]:
    """`get_speech_encoder(name).encoder(wav16k)` on every clip, random full-size weights."""
    from vencoder import get_speech_encoder

    rows = []
    for name in names:
        row = Row("encoder", name, audio_s=sum(c.seconds for c in clips))
        try:
            build_s = timed(lambda: install_encoder(name, pretrain))[0]
            row.setup_s, _, encoder = timed(lambda: get_speech_encoder(name, device=device, pretrain_dir=pretrain))
        except (ImportError, OSError, ValueError) as err:
            rows.append(Row("encoder", name, note=f"skipped: {str(err)[:120]}"))
            continue
        row.wall_s, row.cpu_s, units = _time_clips(lambda c: encoder.encoder(c.wav16.to(device)), clips, device)
        row.note = f"units {list(units.shape)} for {clips[0].seconds:.2f} s; writing the file took {build_s:.1f} s"
        if name == "dphubert":
            row.note += "; unpruned base sizes (upper bound)"
        rows.append(row)
        del encoder, units
        gc.collect()
    return rows


def bench_pipeline(workers: Sequence[int], clips: Sequence[Clip], encoder: str, f0: str, device: str,
                   workdir: Path, one_thread: bool = False) -> list[Row]:
    """`prep.features.extract_features` over the clips, overwriting every output; includes model loading.

    With `one_thread`, a last run of 1 worker on 1 torch thread gives the bound for more workers: n
    workers on n cores can at best do n of those runs at once, so their ceiling over 1 worker (the mean
    of its runs) is `min(n, cores) x the 1-thread speed`, whatever the code does."""
    from prep.features import FeatureSettings, extract_features

    dataset = workdir / "dataset" / "44k"
    for clip in clips:
        target = dataset / clip.path.parent.name / clip.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip.path, target)
    install_encoder(encoder, workdir / "pretrain")
    settings = FeatureSettings(sampling_rate=SR, hop_length=HOP, filter_length=2048, win_length=2048,
                               speech_encoder=encoder, vol_embedding=False, f0_predictor=f0, device=device,
                               pretrain_dir=str(workdir / "pretrain"), overwrite=True)
    rows = []
    for n in workers:
        row = Row("pipeline", f"{encoder} + {f0}, {n} worker{'s' if n > 1 else ''}",
                  audio_s=sum(c.seconds for c in clips))
        row.wall_s, row.cpu_s, summary = timed(
            lambda: extract_features(settings, dataset, num_processes=n, progress=False), device)
        row.note = f"{summary.done} clips written, {len(summary.failed)} failed; includes model loading"
        if rows:
            row.note += (f"; {rows[0].wall_s / row.wall_s:.2f}x the wall speed of {workers[0]} worker"
                         f"{'s' if workers[0] > 1 else ''}")
        rows.append(row)
    if one_thread and rows:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            row = Row("pipeline", f"{encoder} + {f0}, 1 worker, 1 thread", audio_s=sum(c.seconds for c in clips))
            row.wall_s, row.cpu_s, summary = timed(
                lambda: extract_features(settings, dataset, num_processes=1, progress=False), device)
        finally:
            torch.set_num_threads(threads)
        cores = os.cpu_count() or 1
        single = [r.wall_s for n, r in zip(workers, rows) if n == 1] or [rows[0].wall_s]
        baseline = sum(single) / len(single)
        bounds = ", ".join(f"{n} workers <= {baseline * min(n, cores) / row.wall_s:.2f}x"
                           for n in sorted(set(workers)) if n > 1)
        row.note = (f"{summary.done} clips written; ceiling on {cores} cores over 1 worker "
                    f"({'mean of its runs' if len(single) > 1 else 'its run'}): {bounds or 'n/a'}")
        rows.append(row)
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table of the rows (skipped ones keep only their note)."""
    cells = []
    for r in rows:
        if math.isnan(r.wall_s):
            cells.append([r.section, r.name, "", "", "", "", "", r.note])
        else:
            setup = "" if math.isnan(r.setup_s) else f"{r.setup_s:.1f}"
            cells.append([r.section, r.name, setup, f"{r.audio_s:.1f}", f"{r.wall_s:.2f}", f"{r.realtime:.2f}",
                          f"{r.per_cpu:.2f}", r.note])
    return markdown_table(["part", "name", "setup s", "audio s", "wall s", "x real time", "x per CPU s", "note"],
                          cells, numeric_from=2)


def _names(text: str, valid: Sequence[str], flag: str, parser: argparse.ArgumentParser) -> list[str]:
    names = list(valid) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown:
        parser.error(f"unknown {flag} {unknown}; choose from {', '.join(valid)} (or 'all')")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from vencoder import speech_encoder_names

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="reference voice clips, round-robin over speakers")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--f0_predictors", default="all", help=f"comma list of {','.join(F0_NAMES)}, 'all' or ''")
    parser.add_argument("--encoders", default="vec768l12", help="comma list of speech encoder names, 'all' or ''")
    parser.add_argument("--workers", default="1,2", help="num_processes values for the pipeline ('' = skip it)")
    parser.add_argument("--one_thread", action="store_true",
                        help="also run the pipeline with 1 worker on 1 thread: the bound for more workers")
    parser.add_argument("--pipeline_encoder", default="vec768l12", help="speech encoder of the pipeline runs")
    parser.add_argument("--f0_predictor", default="rmvpe", choices=F0_NAMES, help="F0 predictor of the pipeline")
    args = parser.parse_args(argv)
    if args.clips < 1:
        parser.error("--clips must be >= 1")
    args.f0_predictors = _names(args.f0_predictors, F0_NAMES, "--f0_predictors", parser)
    args.encoders = _names(args.encoders, speech_encoder_names(), "--encoders", parser)
    _names(args.pipeline_encoder, speech_encoder_names(), "--pipeline_encoder", parser)
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers must be a comma list of integers, got {args.workers!r}")
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Parse flags, run the three parts, print the machine line and the table; returns the rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_description(device), flush=True)
    clips = load_clips(args.clips)
    rows: list[Row] = []
    # rmvpe (and fcpe) read pretrain/ relative to the working directory, as in 4.1.
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp, contextlib.chdir(tmp):
        workdir = Path(tmp)
        needs_rmvpe = "rmvpe" in args.f0_predictors or (args.workers and args.f0_predictor == "rmvpe")
        rmvpe_source = install_rmvpe(workdir) if needs_rmvpe else None
        rows += bench_f0(args.f0_predictors, clips, args.device, rmvpe_source)
        rows += bench_encoders(args.encoders, clips, args.device, workdir / "pretrain")
        if args.workers:
            rows += bench_pipeline(args.workers, clips, args.pipeline_encoder, args.f0_predictor, args.device,
                                   workdir, args.one_thread)
    seconds = sum(c.seconds for c in clips)
    print(f"{len(clips)} clips, {seconds:.2f} s of audio; 1 untimed warm-up call per F0 predictor / encoder")
    print(format_table(rows))
    print(f"load average at the end: {load_average()}", flush=True)  # other jobs may have come or gone
    return rows


if __name__ == "__main__":
    main()
