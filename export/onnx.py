"""ONNX export of a So-VITS model folder (`checkpoints/<name>/model.pth` + `config.json`) for MoeVoiceStudio."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.atomic import write_bytes_atomic
from core.config import HParams, load_config
from export.model_onnx import TRACE_FRAMES, SynthesizerTrnOnnx, export_onnx
from generator import load_generator
from models import SynthesizerTrn

__all__ = ["ExportResult", "SynthesizerTrnOnnx", "export_folder", "export_onnx", "load_model"]

PathLike = str | os.PathLike
LEGACY_NAME = "model.onnx"


@dataclass
class ExportResult:
    onnx_path: Path
    legacy_path: Path
    json_path: Path
    speaker_mix: bool
    vol_embedding: bool


def load_model(model_path: PathLike, config_path: PathLike) -> tuple[SynthesizerTrn, HParams]:
    """(float32 generator in eval mode on the CPU, weight norm still applied; its config)."""
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file {os.fspath(model_path)} not found (copy your G_*.pth there "
                                "and name it model.pth)")
    hps = load_config(config_path)
    return load_generator(model_path, hps, config_path).net.float().eval(), hps


def export_folder(name: str, checkpoints_dir: PathLike = "checkpoints",
                  frames: int = TRACE_FRAMES) -> ExportResult:
    """Write ``<name>/<name>_SoVits.onnx`` (hard-linked as ``<name>/model.onnx``, the old exporter's name) and
    the MoeVS descriptor ``<name>.json`` under ``checkpoints_dir``; CPU only, the global RNG is not touched.
    The graph takes per-frame speaker weights when the config's ``spk`` map has two or more speakers."""
    root = Path(checkpoints_dir)
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: create it and put the model there as model.pth "
                                "with its config.json")
    net, hps = load_model(folder / "model.pth", folder / "config.json")
    net.remove_weight_norm()  # the same weights, computed once instead of in every run
    model = SynthesizerTrnOnnx(net, len(hps.spk))

    onnx_path = folder / f"{name}_SoVits.onnx"
    export_onnx(model, onnx_path, frames)
    legacy_path = folder / LEGACY_NAME
    legacy_path.unlink(missing_ok=True)
    try:
        os.link(onnx_path, legacy_path)
    except OSError:  # a file system without hard links
        shutil.copyfile(onnx_path, legacy_path)
    json_path = root / f"{name}.json"
    gin = int(net.gin_channels)
    descriptor = {"Folder": name, "Name": name, "Type": "SoVits", "Rate": hps.data.sampling_rate,  # 4.1's order
                  "Hop": hps.data.hop_length, "Hubert": f"vec-{gin}-layer-{12 if gin == 768 else 9}",
                  "SoVits4": True, "SoVits3": False, "CharaMix": model.speaker_mix,
                  "Volume": bool(net.vol_embedding), "HiddenSize": gin, "Characters": list(hps.spk.keys()),
                  "Cluster": ""}
    write_bytes_atomic(json_path, json.dumps(descriptor, indent=4).encode("utf-8"))
    return ExportResult(onnx_path, legacy_path, json_path, model.speaker_mix, bool(net.vol_embedding))
