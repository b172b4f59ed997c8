"""The shallow-diffusion model (train_diff.py's Unit2Mel) as the four ONNX graphs MoeVoiceStudio drives.

``<name>_encoder.onnx``: ``hubert`` f32 [1, F, C] units, ``mel2ph`` i64 [1, T] (0 = zero frame, k = unit
k - 1), ``f0`` f32 [1, T] Hz, ``volume`` f32 [1, T], ``spk_mix`` f32 [T, S] speaker weights per frame (only
when the model has S >= 2 speakers; a one-speaker graph has no speaker input) -> ``mel_pred`` f32 [1, H, T],
the diffusion condition (4.1's name, although it is not a mel).
``<name>_denoise.onnx``: ``noise`` f32 [1, 1, M, T] normalised mel at step ``time`` i64 [1], ``condition``
[1, H, T] -> ``noise_pred`` [1, 1, M, T], the WaveNet's noise estimate.
``<name>_pred.onnx``: ``noise`` (x at step ``time``), ``noise_pred`` (a noise estimate), ``time``,
``time_prev`` i64 [1] -> ``noise_pred_o`` [1, 1, M, T], x moved to step ``time_prev`` (the PNDM transfer).
``<name>_after.onnx``: ``x`` [1, 1, M, T] normalised mel -> ``mel_out`` [1, M, T] log-mel for the vocoder.

The client does the rest, as MoeVS does: x = q_sample(normalised mel, k_step - 1); for each step t
(stride ``speedup``, largest first) with p = max(t - speedup, 0): eps = denoise(x, t); the first step
averages eps with denoise(pred(x, eps, t, p), p), later ones combine eps with up to three earlier
estimates (Adams-Bashforth); x = pred(x, combined eps, t, p); finally after(x). MoeVS visits
t = k_step - speedup, k_step - 2 speedup, ... >= 0: our `pndm` sampler's steps when speedup divides k_step.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from core.atomic import write_bytes_atomic
from core.checkpoint import CheckpointNotFoundError
from diffusion.diffusion import GaussianDiffusion
from diffusion.samplers.stride import transfer
from diffusion.unit2mel import Unit2Mel, load_diffusion_model
from export.model_onnx import TRACE_FRAMES, gather_units, list_axes, trace_onnx

__all__ = ["DiffusionExportResult", "GRAPHS", "Unit2MelEncoderOnnx", "diffusion_graphs", "export_diffusion_folder"]

PathLike = str | os.PathLike
GRAPHS = ("encoder", "denoise", "pred", "after")


class Unit2MelEncoderOnnx(nn.Module):
    """Graph inputs -> the condition [1, H, T] (shares the model's modules; fills its speaker table)."""

    def __init__(self, model: Unit2Mel) -> None:
        super().__init__()
        self.model = model
        model.init_spkmix(model.n_spk)  # every speaker is mixable, as 4.1's export

    def forward(self, hubert: Tensor, mel2ph: Tensor, f0: Tensor, volume: Tensor, spk_mix: Tensor) -> Tensor:
        units = gather_units(hubert, mel2ph)
        # A one-speaker model ignores spk_mix, so the trace leaves that input out (as 4.1's graph).
        return self.model.embed(units, f0.unsqueeze(-1), volume.unsqueeze(-1), spk_id=spk_mix).transpose(1, 2)


class _Pred(nn.Module):
    """The PNDM transfer (the trace keeps only the schedule of the decoder it shares)."""

    def __init__(self, decoder: GaussianDiffusion) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, noise: Tensor, noise_pred: Tensor, time: Tensor, time_prev: Tensor) -> Tensor:
        return transfer(self.decoder, noise, noise_pred, time, time_prev)


class _After(nn.Module):
    """Normalised mel [1, 1, M, T] -> log-mel [1, M, T]."""

    def __init__(self, decoder: GaussianDiffusion) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder.denorm_spec(x.squeeze(1).transpose(1, 2)).transpose(1, 2)


def diffusion_graphs(model: Unit2Mel, frames: int = TRACE_FRAMES) -> dict[str, bytes]:
    """The four graphs of a Unit2Mel in eval mode on the CPU, keyed by GRAPHS; 4.1's input and output names,
    order and dynamic axes. Traced on random inputs from a private generator (the global RNG is untouched)."""
    model = model.float().eval()
    decoder = model.decoder
    gen = torch.Generator().manual_seed(0)
    hidden, bins = model.unit_embed.out_features, decoder.out_dims
    spk_mix = torch.full((frames, model.n_spk), 1.0 / model.n_spk) if model.spk_embed is not None else \
        torch.zeros(frames, 0)
    x = torch.randn(1, 1, bins, frames, generator=gen)
    time, time_prev = torch.LongTensor([min(100, decoder.num_timesteps - 1)]), torch.LongTensor([0])
    cases = {
        "encoder": (Unit2MelEncoderOnnx(model),
                    (torch.randn(1, frames, model.input_channel, generator=gen),
                     torch.arange(1, frames + 1).unsqueeze(0), torch.rand(1, frames, generator=gen) * 500 + 50,
                     torch.rand(1, frames, generator=gen), spk_mix),
                    {"hubert": [1], "mel2ph": [1], "f0": [1], "volume": [1], "spk_mix": [0]}, ["mel_pred"]),
        "denoise": (decoder.denoise_fn, (x, time, torch.randn(1, hidden, frames, generator=gen)),
                    {"noise": [3], "time": [], "condition": [2]}, ["noise_pred"]),
        "pred": (_Pred(decoder), (x, torch.randn(1, 1, bins, frames, generator=gen), time, time_prev),
                 {"noise": [3], "noise_pred": [3], "time": [], "time_prev": []}, ["noise_pred_o"]),
        "after": (_After(decoder), (x,), {"x": [3]}, ["mel_out"]),
    }
    out = {}
    for graph, (module, inputs, dims, outputs) in cases.items():
        buffer = io.BytesIO()
        trace_onnx(buffer, module, inputs, list(dims), outputs, list_axes(dims))
        out[graph] = buffer.getvalue()
    return out


@dataclass
class DiffusionExportResult:
    paths: dict[str, Path]  # graph -> file, in GRAPHS order
    n_speakers: int


def export_diffusion_folder(name: str, checkpoints_dir: PathLike = "checkpoints",
                            frames: int = TRACE_FRAMES) -> DiffusionExportResult:
    """Read ``<name>/diffusion/model.pt`` + ``config.yaml`` under ``checkpoints_dir`` and write
    ``<name>/<name>_{encoder,denoise,pred,after}.onnx``. All four graphs are built before the first file is
    written, each file atomically."""
    folder = Path(checkpoints_dir) / name
    source = folder / "diffusion"
    model_path = source / "model.pt"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: create it and put the diffusion model in {source}/ as "
                                "model.pt with its config.yaml")
    if not model_path.is_file():
        raise CheckpointNotFoundError(f"diffusion model {model_path} not found (copy your logs/44k/diffusion/"
                                      "model_<step>.pt there and name it model.pt, with its config.yaml)")
    model, _ = load_diffusion_model(model_path, "cpu", source / "config.yaml")
    graphs = diffusion_graphs(model, frames)
    paths = {graph: folder / f"{name}_{graph}.onnx" for graph in GRAPHS}
    for graph in GRAPHS:
        write_bytes_atomic(paths[graph], graphs[graph])
    return DiffusionExportResult(paths, model.n_spk)
