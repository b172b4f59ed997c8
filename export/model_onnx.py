"""``SynthesizerTrnOnnx``: a loaded ``SynthesizerTrn`` with the graph interface MoeVoiceStudio feeds.

Inputs: ``c`` float32 [1, F, C] units (C = ssl_dim); ``f0`` float32 [1, T] Hz, 0 = unvoiced; ``mel2ph``
int64 [1, T] unit per frame (0 = zero vector, k = unit k - 1); ``uv`` float32 [1, T]; ``noise`` float32
[1, inter_channels, T] prior noise, pre-scaled; ``sid`` int64 [1], or float32 [T, S] weights (mix
variant); ``vol`` float32 [1, T], only with ``vol_embedding``. Output ``audio`` float32 [1, 1, T * hop].
Unlike ``infer``, the mask is all ones, there is no automatic F0, and the harmonic source works at
frame rate (as 4.1's export, so MoeVS hears what it heard from 4.1's graphs).
"""
from __future__ import annotations

import copy
import os
import warnings
from collections import OrderedDict
from typing import BinaryIO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.atomic import write_atomic
from modules import f0 as f0_math
from models import SynthesizerTrn
from vdecoder.hifigan.models import Generator, SourceModuleHnNSF

__all__ = ["OPSET", "TRACE_FRAMES", "SynthesizerTrnInfer", "SynthesizerTrnOnnx", "dummy_inputs", "export_infer_graph",
           "export_onnx", "frame_source_decoder", "gather_units", "list_axes", "prior_to_latent", "trace_onnx"]

OPSET = 16
TRACE_FRAMES = 200


def frame_source_decoder(dec: Generator) -> Generator:
    """A view of ``dec`` sharing every layer (``dec`` is unchanged) with a frame-rate harmonic source."""
    view = copy.copy(dec)
    for registry in ("_parameters", "_buffers", "_modules"):
        object.__setattr__(view, registry, OrderedDict(getattr(dec, registry)))
    sine = dec.m_source.l_sin_gen
    source = SourceModuleHnNSF(sine.sampling_rate, source="frame", harmonic_num=sine.dim - 1)
    source.l_linear = dec.m_source.l_linear
    view.m_source = source
    return view


def gather_units(c: Tensor, mel2ph: Tensor) -> Tensor:
    """Units [1, F, C] spread over frames by mel2ph [1, T] -> [1, T, C]; mel2ph 0 gives a zero frame, k unit k - 1."""
    table = F.pad(c, (0, 0, 1, 0))
    return torch.gather(table, 1, mel2ph.unsqueeze(2).expand(-1, -1, c.size(2)))


def prior_to_latent(net: SynthesizerTrn, x: Tensor, f0: Tensor, noise: Tensor, x_mask: Tensor, g: Tensor) -> Tensor:
    """enc_p's own modules, then the reversed flow: x [1, H, T] -> z [1, inter, T]. Only the prior sample differs
    from ``infer``: its noise [1, inter, T] (pre-scaled) is a graph input."""
    enc_p = net.enc_p
    x = x + enc_p.f0_emb(f0_math.f0_to_coarse(f0)).transpose(1, 2)
    stats = enc_p.proj(enc_p.enc_(x * x_mask, x_mask)) * x_mask
    m_p, logs_p = torch.split(stats, enc_p.out_channels, dim=1)
    z_p = (m_p + noise * torch.exp(logs_p)) * x_mask
    return net.flow(z_p, x_mask, g=g, reverse=True)


class SynthesizerTrnInfer(nn.Module):
    """``SynthesizerTrn.infer`` as a graph for ONNX Runtime: the random draws (prior noise, harmonic source) come
    in as inputs, made by the caller with ``infer``'s generator, so the audio matches ``infer``'s.

    Inputs: ``c`` [1, ssl, T], ``f0`` [1, T] Hz, ``uv`` [1, T], ``noise`` [1, inter, T] pre-scaled, ``source``
    [1, T * hop, 1], ``sid`` int64 [1, 1]; ``vol`` [1, T] only with ``vol_embedding``. Output ``audio`` [1, 1, T * hop].
    """

    def __init__(self, net: SynthesizerTrn) -> None:
        super().__init__()
        self.net = net

    def forward(self, c: Tensor, f0: Tensor, uv: Tensor, noise: Tensor, source: Tensor, sid: Tensor,
                vol: Tensor | None = None) -> Tensor:
        x_mask = torch.ones_like(f0).unsqueeze(1)
        g = self.net.speaker_condition(sid)
        z = prior_to_latent(self.net, self.net.frame_input(c, uv, x_mask, vol), f0, noise, x_mask, g)
        return self.net.dec(z, f0, g=g, har_source=source)


class SynthesizerTrnOnnx(nn.Module):
    """The graph of a loaded ``SynthesizerTrn`` in eval mode (shares its modules); with ``n_speakers_mix`` >= 2,
    ``sid`` weighs the first rows of ``emb_g`` per frame (calls ``net.EnableCharacterMix``, as 4.1 does)."""

    def __init__(self, net: SynthesizerTrn, n_speakers_mix: int = 0) -> None:
        super().__init__()
        self.net = net
        self.dec = frame_source_decoder(net.dec)
        self.speaker_mix = n_speakers_mix >= 2
        self.n_speakers_mix = n_speakers_mix if self.speaker_mix else 0
        if self.speaker_mix:
            if n_speakers_mix > net.n_speakers:
                raise ValueError(f"the speaker map names {n_speakers_mix} speakers but the model has only "
                                 f"{net.n_speakers} speaker embeddings (model.n_speakers)")
            net.EnableCharacterMix(n_speakers_mix, net.emb_g.weight.device)

    def encode(self, c: Tensor, f0: Tensor, mel2ph: Tensor, uv: Tensor, noise: Tensor, sid: Tensor,
               vol: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Graph inputs -> (z [1, inter, T] after the reversed flow, g [1, gin, 1 or T])."""
        units = gather_units(c, mel2ph).transpose(1, 2)
        x_mask = torch.ones_like(f0).unsqueeze(1)
        g = self.net.speaker_condition(sid)
        return prior_to_latent(self.net, self.net.frame_input(units, uv, x_mask, vol), f0, noise, x_mask, g), g

    def forward(self, c: Tensor, f0: Tensor, mel2ph: Tensor, uv: Tensor, noise: Tensor, sid: Tensor,
                vol: Tensor | None = None) -> Tensor:
        z, g = self.encode(c, f0, mel2ph, uv, noise, sid, vol)
        return self.dec(z, f0, g=g)


def dummy_inputs(model: SynthesizerTrnOnnx, frames: int = TRACE_FRAMES, seed: int = 0) -> tuple[Tensor, ...]:
    """Random trace inputs, one unit per frame, all voiced; equal mix weights, like 4.1's exporter."""
    net = model.net
    gen = torch.Generator().manual_seed(seed)
    c = torch.rand(1, frames, net.ssl_dim, generator=gen)
    f0 = torch.rand(1, frames, generator=gen)
    mel2ph = torch.arange(frames, dtype=torch.int64).unsqueeze(0)
    uv = torch.ones(1, frames)
    noise = torch.randn(1, net.inter_channels, frames, generator=gen)
    if model.speaker_mix:
        sid = torch.full((frames, model.n_speakers_mix), 1.0 / model.n_speakers_mix)
    else:
        sid = torch.LongTensor([0])
    return (c, f0, mel2ph, uv, noise, sid) + ((torch.rand(1, frames, generator=gen),) if net.vol_embedding else ())


def list_axes(dims: dict[str, list[int]]) -> dict[str, dict[int, str]]:
    """Dynamic axes given as 4.1 gives them (plain lists), named as the exporter names those:
    ``{"c": [0, 1]}`` -> ``{"c": {0: "c_dynamic_axes_1", 1: "c_dynamic_axes_2"}}``; empty lists are dropped."""
    return {n: {d: f"{n}_dynamic_axes_{i + 1}" for i, d in enumerate(ds)} for n, ds in dims.items() if ds}


def trace_onnx(f: BinaryIO, model: nn.Module, inputs: tuple[Tensor, ...], input_names: list[str],
               output_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Trace ``model`` on ``inputs`` into the file object ``f``: TorchScript exporter, opset 16, no constant
    folding; branches taken for ``inputs`` are fixed in the graph and inputs it never reads are left out."""
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing evaluates shape checks and branches once; the TorchScript exporter is chosen on purpose
        # (a trace, as 4.1 exported), so its deprecation notices are noise too.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(model, inputs, f, input_names=input_names, output_names=output_names,
                          opset_version=OPSET, do_constant_folding=False, dynamo=False, dynamic_axes=dynamic_axes)


def export_onnx(model: SynthesizerTrnOnnx, path: str | os.PathLike, frames: int = TRACE_FRAMES) -> None:
    """Trace ``model`` on the CPU into ``path``, atomically (see `trace_onnx`); speaker id or mix and vol or
    not follow the model."""
    model = model.eval()
    names = ["c", "f0", "mel2ph", "uv", "noise", "sid"] + (["vol"] if model.net.vol_embedding else [])
    # The dynamic axes MoeVS expects.
    dims = {"c": [0, 1], "f0": [1], "mel2ph": [1], "uv": [1], "noise": [2], "vol": [1],
            "sid": [0] if model.speaker_mix else []}
    axes = list_axes({n: dims[n] for n in names})
    write_atomic(path, lambda f: trace_onnx(f, model, dummy_inputs(model, frames), names, ["audio"], axes))


def export_infer_graph(net: SynthesizerTrn, path: str | os.PathLike, frames: int = TRACE_FRAMES) -> None:
    """Write ``SynthesizerTrnInfer(net)`` (float32, CPU, eval) to ``path``, T and the sample count dynamic."""
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, net.ssl_dim, frames, generator=gen), 200 + 100 * torch.rand(1, frames, generator=gen),
              torch.ones(1, frames), torch.randn(1, net.inter_channels, frames, generator=gen),
              torch.rand(1, frames * net.dec.upp, 1, generator=gen), torch.LongTensor([[0]]))
    names = ["c", "f0", "uv", "noise", "source", "sid"]
    if net.vol_embedding:
        inputs, names = inputs + (torch.rand(1, frames, generator=gen),), names + ["vol"]
    axes = {"c": {2: "frames"}, "f0": {1: "frames"}, "uv": {1: "frames"}, "noise": {2: "frames"},
            "source": {1: "samples"}, "vol": {1: "frames"}, "audio": {2: "samples"}}
    names_axes = {n: axes[n] for n in names + ["audio"] if n in axes}  # sid has none
    write_atomic(path, lambda f: trace_onnx(f, SynthesizerTrnInfer(net).eval(), inputs, names, ["audio"], names_axes))
