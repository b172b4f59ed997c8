"""ONNX export of a So-VITS model folder (`checkpoints/<name>/model.pth` + `config.json`) for MoeVoiceStudio, and
the ONNX Runtime backend of `Svc` (`OnnxSynthesizer`: the generator exported once, cached beside the model)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.atomic import write_bytes_atomic
from core.config import HParams, load_config
from export.model_onnx import TRACE_FRAMES, SynthesizerTrnOnnx, export_infer_graph, export_onnx
from generator import load_generator
from models import SynthesizerTrn

__all__ = ["ExportResult", "OnnxSynthesizer", "SynthesizerTrnOnnx", "cached_graph_path", "export_folder",
           "export_onnx", "load_model"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
LEGACY_NAME = "model.onnx"
GRAPH_VERSION = b"SynthesizerTrnInfer 1"  # part of the cache key: change it when the graph changes


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


def cached_graph_path(model_path: PathLike, config_path: PathLike) -> Path:
    """``<model dir>/<model stem>.ort-<key>.onnx``; key: SHA-256 of the graph version, model and config bytes."""
    digest = hashlib.sha256(GRAPH_VERSION)
    for path in (model_path, config_path):
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    model = Path(model_path)
    return model.with_name(f"{model.stem}.ort-{digest.hexdigest()[:16]}.onnx")


class OnnxSynthesizer:
    """``SynthesizerTrn.infer`` run by ONNX Runtime on the CPU, same audio (within 1e-4) for the same seed.

    ``net``: the loaded float32 generator (weight norm removed) of ``model_path`` + ``config_path``. Its graph is
    exported on first use to ``cached_graph_path`` (older graphs of the same model file are removed) and reused
    afterwards. The random draws and the harmonic source stay in PyTorch (about 1 % of a call); automatic F0
    prediction and per-frame speaker mixes run ``net.infer`` itself.
    """

    def __init__(self, net: SynthesizerTrn, model_path: PathLike, config_path: PathLike,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.net = net
        self.path = cached_graph_path(model_path, config_path)
        if not self.path.is_file():
            logger.info("exporting the generator for ONNX Runtime to %s (once per model file)", self.path)
            export_infer_graph(net, self.path)
            for old in self.path.parent.glob(f"{Path(model_path).stem}.ort-*.onnx"):
                if old != self.path:
                    old.unlink(missing_ok=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def infer(self, c: Tensor, f0: Tensor, uv: Tensor, g: Tensor | None = None, noice_scale: float = 0.35,
              seed: int = 52468, predict_f0: bool = False, vol: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``SynthesizerTrn.infer``'s signature and results: (audio [1, 1, T * hop], f0 [1, T])."""
        net = self.net
        if predict_f0 or g is None or g.numel() != 1:
            return net.infer(c, f0, uv, g=g, noice_scale=noice_scale, seed=seed, predict_f0=predict_f0, vol=vol)
        generator = torch.Generator().manual_seed(seed)  # infer's draws, in infer's order
        with torch.inference_mode():
            noise = torch.randn((1, net.inter_channels, c.size(2)), generator=generator) * noice_scale
            source = net.dec.m_source(f0, net.dec.upp, generator)
        feeds = {"c": c, "f0": f0, "uv": uv, "noise": noise, "source": source, "sid": g.reshape(1, 1).long()}
        if net.vol_embedding:
            feeds["vol"] = vol
        audio = self.session.run(["audio"], {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                                             for k, v in feeds.items()})[0]
        return torch.from_numpy(audio), f0
