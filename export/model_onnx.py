"""Export variant of ``SynthesizerTrn`` for MoeVoiceStudio.

``SynthesizerTrnOnnx`` wraps an existing, loaded ``models.SynthesizerTrn`` and runs its own modules
(``pre``, ``emb_uv``, ``emb_vol``, ``emb_g``, ``enc_p``, ``flow``, ``dec``) with the graph interface
MoeVoiceStudio feeds:

==========  =====================  ============================================================
input       dtype, shape           meaning
==========  =====================  ============================================================
``c``       float32 [1, F, C]      content units, time-major (C = ssl_dim)
``f0``      float32 [1, T]         F0 in Hz, 0 = unvoiced
``mel2ph``  int64 [1, T]           unit index per frame: 0 = zero vector, k = unit k - 1
``uv``      float32 [1, T]         voicing (0/1)
``noise``   float32 [1, I, T]      prior noise (I = inter_channels), pre-scaled by the caller
``sid``     int64 [1]              speaker id; float32 [T, S] per-frame weights (mix variant)
``vol``     float32 [1, T]         loudness, only when the model has ``vol_embedding``
==========  =====================  ============================================================

Output ``audio`` float32 [1, 1, T * hop]. Differences from ``SynthesizerTrn.infer``: the prior
noise is an input (``z_p = m_p + noise * exp(logs_p)``), the mask is all ones, there is no
automatic F0, and the decoder's harmonic source accumulates phase per frame and upsamples it
linearly (the stand-alone vocoder's ``FrameSineGen``) instead of per sample, as 4.1's export does,
so MoeVS hears what it heard from 4.1's graphs. The source's random start phases and noise stay inside
the graph.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules import f0 as f0_math
from models import SynthesizerTrn
from vdecoder.hifigan.models import Generator, SourceModuleHnNSF

__all__ = ["OPSET", "OUTPUT_NAMES", "TRACE_FRAMES", "SynthesizerTrnOnnx", "dummy_inputs", "dynamic_axes",
           "export_onnx", "frame_source_decoder", "input_names"]

OPSET = 16
TRACE_FRAMES = 200
OUTPUT_NAMES = ["audio"]


def frame_source_decoder(dec: Generator) -> Generator:
    """``dec`` with a frame-rate harmonic source: every layer is shared, only the sine generator differs.

    A shallow copy with its own module registry: ``ups``, ``resblocks``, ``noise_convs``,
    ``conv_pre``/``conv_post``, ``cond`` (and the snake activations) are the very modules of
    ``dec``, so their So-VITS paddings and weights are kept, and the new source reuses
    ``dec.m_source.l_linear``. ``dec`` itself is not changed.
    """
    view = copy.copy(dec)
    for registry in ("_parameters", "_buffers", "_modules"):
        object.__setattr__(view, registry, OrderedDict(getattr(dec, registry)))
    sine = dec.m_source.l_sin_gen
    source = SourceModuleHnNSF(sine.sampling_rate, source="frame", harmonic_num=sine.dim - 1)
    source.l_linear = dec.m_source.l_linear
    view.m_source = source
    return view


class SynthesizerTrnOnnx(nn.Module):
    """The ONNX graph of a loaded ``SynthesizerTrn`` (shares its modules; see the module docstring).

    Args:
        net: the loaded model, in eval mode.
        n_speakers_mix: speakers of the config's ``spk`` map; with 2 or more, ``sid`` is a
            [T, n_speakers_mix] weight matrix over the first ``n_speakers_mix`` rows of ``emb_g``
            (this calls ``net.EnableCharacterMix`` like 4.1's exporter; integer ids keep working
            in ``net.infer``). In PyTorch the mix path needs T >= 2; the graph has no such limit.
    """

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
        """Graph inputs (module docstring) -> (z [1, inter, T] after the reversed flow, g [1, gin, 1 or T])."""
        # Row 0 of the gathered table is a zero frame, so mel2ph 0 marks frames without a unit.
        table = F.pad(c, (0, 0, 1, 0))
        units = torch.gather(table, 1, mel2ph.unsqueeze(2).expand(-1, -1, c.size(2))).transpose(1, 2)
        x_mask = torch.ones_like(f0).unsqueeze(1)
        g = self.net.speaker_condition(sid)
        x = self.net.frame_input(units, uv, x_mask, vol)
        # enc_p's own modules; only the prior sample differs: its noise is a graph input.
        enc_p = self.net.enc_p
        x = x + enc_p.f0_emb(f0_math.f0_to_coarse(f0)).transpose(1, 2)
        stats = enc_p.proj(enc_p.enc_(x * x_mask, x_mask)) * x_mask
        m_p, logs_p = torch.split(stats, enc_p.out_channels, dim=1)
        z_p = (m_p + noise * torch.exp(logs_p)) * x_mask
        return self.net.flow(z_p, x_mask, g=g, reverse=True), g

    def forward(self, c: Tensor, f0: Tensor, mel2ph: Tensor, uv: Tensor, noise: Tensor, sid: Tensor,
                vol: Tensor | None = None) -> Tensor:
        """Graph inputs (module docstring) -> audio [1, 1, T * hop]."""
        z, g = self.encode(c, f0, mel2ph, uv, noise, sid, vol)
        return self.dec(z, f0, g=g)


def input_names(vol_embedding: bool) -> list[str]:
    """Graph input names in order: c, f0, mel2ph, uv, noise, sid (+ vol)."""
    return ["c", "f0", "mel2ph", "uv", "noise", "sid"] + (["vol"] if vol_embedding else [])


def dynamic_axes(speaker_mix: bool, vol_embedding: bool) -> dict[str, dict[int, str]]:
    """Dynamic axes MoeVS expects: c 0,1; f0/mel2ph/uv(/vol) 1; noise 2; sid 0 for the mix variant.

    The axis names are the ones the exporter generates for 4.1's plain lists (``c_dynamic_axes_1``, ...).
    """
    axes = {"c": [0, 1], "f0": [1], "mel2ph": [1], "uv": [1], "noise": [2]}
    if speaker_mix:
        axes["sid"] = [0]
    if vol_embedding:
        axes["vol"] = [1]
    return {name: {dim: f"{name}_dynamic_axes_{i + 1}" for i, dim in enumerate(dims)} for name, dims in axes.items()}


def dummy_inputs(model: SynthesizerTrnOnnx, frames: int = TRACE_FRAMES, seed: int = 0) -> tuple[Tensor, ...]:
    """Random trace inputs of ``frames`` frames, one unit per frame (mel2ph = 0..T-1), all voiced.

    The mix variant gets equal weights for every speaker, like 4.1's exporter.
    """
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
    inputs = (c, f0, mel2ph, uv, noise, sid)
    if net.vol_embedding:
        inputs += (torch.rand(1, frames, generator=gen),)
    return inputs


def export_onnx(model: SynthesizerTrnOnnx, path: str | os.PathLike, frames: int = TRACE_FRAMES) -> None:
    """Trace ``model`` on the CPU with ``frames`` frames of random data and write the ONNX file.

    Opset 16, no constant folding, 4.1's names and dynamic axes. Uses the TorchScript
    exporter (``dynamo=False``): the graph is a trace, so the branches taken for the dummy input
    (id or mix speaker path, vol or not) are fixed in it.
    """
    model = model.eval()
    vol = bool(model.net.vol_embedding)
    with warnings.catch_warnings():
        # Expected while tracing: shape checks and Python branches are evaluated once, for the dummy input.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        # The TorchScript exporter is chosen on purpose (a trace, as 4.1 exported; the dynamo
        # exporter would need onnxscript), so its deprecation notices are noise here.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            model, dummy_inputs(model, frames), os.fspath(path),
            input_names=input_names(vol), output_names=OUTPUT_NAMES,
            dynamic_axes=dynamic_axes(model.speaker_mix, vol),
            opset_version=OPSET, do_constant_folding=False, dynamo=False,
        )
