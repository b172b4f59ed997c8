"""ONNX export of a So-VITS model folder for MoeVoiceStudio.

``export_folder("aziplayer")`` reads ``checkpoints/aziplayer/model.pth`` and ``config.json`` and writes
``checkpoints/aziplayer/aziplayer_SoVits.onnx`` (with ``model.onnx``, the old exporter's name, as a
hard link to it) and the MoeVS descriptor ``checkpoints/aziplayer.json``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.atomic import write_atomic
from core.config import HParams, load_config
from export.model_onnx import TRACE_FRAMES, SynthesizerTrnOnnx, export_onnx
from generator import load_generator
from models import SynthesizerTrn

__all__ = ["ExportResult", "SynthesizerTrnOnnx", "export_folder", "export_onnx", "load_model", "moevs_config"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
LEGACY_NAME = "model.onnx"


@dataclass
class ExportResult:
    """Paths written by ``export_folder`` and the speaker interface of the graph."""

    onnx_path: Path
    legacy_path: Path
    json_path: Path
    speaker_mix: bool
    vol_embedding: bool


def load_model(model_path: PathLike, config_path: PathLike) -> tuple[SynthesizerTrn, HParams]:
    """The float32 generator of `model_path` (G_*.pth or release file) in eval mode on the CPU, weight
    norm still applied, and its config. Raises ConfigError, CheckpointError / FileNotFoundError."""
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file {os.fspath(model_path)} not found (copy your G_*.pth there "
                                "and name it model.pth)")
    hps = load_config(config_path)
    return load_generator(model_path, hps, config_path).net.float().eval(), hps


def moevs_config(name: str, hps: HParams, net: SynthesizerTrn, speaker_mix: bool) -> dict[str, Any]:
    """The MoeVS model descriptor, keys in 4.1's order."""
    gin = int(net.gin_channels)
    layer = "layer-12" if gin == 768 else "layer-9"
    return {
        "Folder": name,
        "Name": name,
        "Type": "SoVits",
        "Rate": hps.data.sampling_rate,
        "Hop": hps.data.hop_length,
        "Hubert": f"vec-{gin}-{layer}",
        "SoVits4": True,
        "SoVits3": False,
        "CharaMix": speaker_mix,
        "Volume": bool(net.vol_embedding),
        "HiddenSize": gin,
        "Characters": list(hps.spk.keys()),
        "Cluster": "",
    }


def _link_or_copy(source: Path, link: Path) -> None:
    """``link`` becomes a hard link to ``source`` (a copy where the file system has no hard links)."""
    if link.exists() or link.is_symlink():
        link.unlink()
    try:
        os.link(source, link)
    except OSError:
        shutil.copyfile(source, link)


def export_folder(name: str, checkpoints_dir: PathLike = "checkpoints",
                  frames: int = TRACE_FRAMES) -> ExportResult:
    """Export ``<checkpoints_dir>/<name>/model.pth`` + ``config.json`` for MoeVoiceStudio.

    Weight norm is folded first (the same weights, computed once instead of in every run). The
    graph takes per-frame speaker weights when the config's ``spk`` map has two or more speakers,
    otherwise a speaker id. Runs on the CPU; the global RNG is not touched.
    """
    root = Path(checkpoints_dir)
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: create it and put the model there as model.pth "
                                "with its config.json")
    net, hps = load_model(folder / "model.pth", folder / "config.json")
    net.remove_weight_norm()
    n_speakers = len(hps.spk)
    model = SynthesizerTrnOnnx(net, n_speakers)

    onnx_path = folder / f"{name}_SoVits.onnx"
    # Written under a temporary name first, so an interrupted export leaves no truncated graph.
    tmp = folder / f".{onnx_path.name}.tmp"
    try:
        with torch.no_grad():
            export_onnx(model, tmp, frames)
        os.replace(tmp, onnx_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    legacy_path = folder / LEGACY_NAME
    _link_or_copy(onnx_path, legacy_path)

    json_path = root / f"{name}.json"
    text = json.dumps(moevs_config(name, hps, net, model.speaker_mix), indent=4)
    write_atomic(json_path, lambda f: f.write(text.encode("utf-8")))
    logger.info("wrote %s (%s speaker input) and %s", onnx_path,
                "per-frame mix" if model.speaker_mix else "id", json_path)
    return ExportResult(onnx_path, legacy_path, json_path, model.speaker_mix, bool(net.vol_embedding))
