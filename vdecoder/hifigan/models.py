"""NSF-HiFiGAN: the one generator behind the So-VITS decoder (``dec``) and the stand-alone vocoder.

Differences between the two uses are constructor options, not copies:

==========================  =====================================  =================================
option                      So-VITS decoder (``dec``)               stand-alone vocoder (OpenVPI)
==========================  =====================================  =================================
input                       latent z [B, inter, T]                  log-mel [B, num_mels, T]
speaker conditioning        ``cond`` (gin -> initial channels)      none
harmonic source             per-sample phase (``SampleSineGen``)    per-frame phase (``FrameSineGen``)
transposed-conv padding     (k - u + 1) // 2                        (k - u) // 2
noise-conv padding          (s + 1) // 2                            s // 2
activations                 leaky ReLU, or anti-aliased SnakeBeta   leaky ReLU
==========================  =====================================  =================================
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.runtime import fast_paths
from modules.commons import WNConv1d, WNConvTranspose1d, remove_weight_norm
from modules.modules import LRELU_SLOPE, ResBlock1, ResBlock2
from modules.polyphase import conv_forms, conv_transpose_polyphase, polyphase_fits
from modules.snake import Activation1d

SourceKind = Literal["sample", "frame"]
HARMONIC_NUM = 8
SINE_AMP = 0.1
NOISE_STD = 0.003


def _randn(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=like.device)


def _rand(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(tuple(shape), generator=generator, dtype=like.dtype, device=like.device)


class SampleSineGen(nn.Module):
    """Harmonic source of the So-VITS decoder: phase accumulated per sample in the input dtype.

    f0 [B, N] at sample rate -> (sines [B, N, dim], uv [B, N, 1]); dim = harmonic_num + 1.
    Phase increments (k f0 / sr) mod 1 are summed with a -1 correction wherever the running
    phase wraps, which keeps the cumulative sum small. Harmonics 2.. get a random start phase.
    """

    def __init__(self, sampling_rate: int, harmonic_num: int = HARMONIC_NUM) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.dim = harmonic_num + 1

    def forward(self, f0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        # A half-precision f0 (an fp16 model on CUDA) cannot carry the running phase: fp16 steps are 16 near
        # 20000 cycles and overflow at 65504, so the phase is summed in float32 (as 4.1's type promotion did).
        f0 = f0.float() if f0.dtype in (torch.float16, torch.bfloat16) else f0
        harmonics = torch.arange(1, self.dim + 1, device=f0.device, dtype=f0.dtype)
        rad = (f0.unsqueeze(-1) * harmonics / self.sampling_rate) % 1  # [B, N, dim]
        initial = _rand((f0.size(0), self.dim), f0, generator)
        initial[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + initial
        wrapped = torch.cumsum(rad, dim=1).remainder_(1)
        # Subtracting the wrap mask gives the same bits as adding a -1/0 shift tensor, without one.
        rad[:, 1:, :] -= (wrapped[:, 1:, :] < wrapped[:, :-1, :]).to(rad.dtype)
        sines = torch.cumsum(rad, dim=1).mul_(2 * math.pi).sin_().mul_(SINE_AMP)
        uv = (f0 > 0).to(f0.dtype).unsqueeze(-1)
        return sines, uv


class FrameSineGen(nn.Module):
    """Harmonic source of the stand-alone NSF-HiFiGAN: phase accumulated per frame in float64.

    f0 [B, T] at frame rate, upp samples per frame -> (sines [B, T*upp, dim], uv [B, T*upp, 1]).
    Running frame phase x upp is linearly interpolated (align_corners) to sample rate only to
    locate the wraps; the sines integrate the nearest-upsampled per-sample increments.
    """

    def __init__(self, sampling_rate: int, harmonic_num: int = HARMONIC_NUM) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.dim = harmonic_num + 1

    def forward(self, f0: Tensor, upp: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        f0 = f0.unsqueeze(-1)  # [B, T, 1]
        harmonics = torch.arange(1, self.dim + 1, device=f0.device, dtype=f0.dtype).view(1, 1, -1)
        rad = (f0 * harmonics / self.sampling_rate) % 1  # [B, T, dim]
        initial = _rand((f0.size(0), self.dim), f0, generator)
        initial[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + initial
        running = torch.cumsum(rad.double(), 1).to(f0.dtype) * upp
        running = F.interpolate(running.transpose(2, 1), scale_factor=upp, mode="linear",
                                align_corners=True).transpose(2, 1) % 1
        rad = F.interpolate(rad.transpose(2, 1), scale_factor=upp, mode="nearest").transpose(2, 1)
        shift = torch.zeros_like(rad)
        shift[:, 1:, :] = ((running[:, 1:, :] - running[:, :-1, :]) < 0) * -1.0
        phase = torch.cumsum(rad.double() + shift.double(), dim=1)
        sines = torch.sin(phase * 2 * math.pi).to(f0.dtype) * SINE_AMP
        uv = (f0 > 0).to(f0.dtype)
        uv = F.interpolate(uv.transpose(2, 1), scale_factor=upp, mode="nearest").transpose(2, 1)
        return sines, uv


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise source: tanh(Linear(dim -> 1)(sines * uv + noise)).

    Noise std is 0.003 on voiced and 0.1/3 on unvoiced samples. Output [B, N, 1].
    """

    def __init__(self, sampling_rate: int, source: SourceKind = "sample",
                 harmonic_num: int = HARMONIC_NUM) -> None:
        super().__init__()
        self.source = source
        self.l_sin_gen = (SampleSineGen if source == "sample" else FrameSineGen)(sampling_rate, harmonic_num)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)

    def forward(self, f0: Tensor, upp: int, generator: torch.Generator | None = None) -> Tensor:
        """f0 [B, T] at frame rate -> merged source [B, T*upp, 1]."""
        if self.source == "sample":
            sines, uv = self.l_sin_gen(torch.repeat_interleave(f0, upp, dim=1), generator)
        else:
            sines, uv = self.l_sin_gen(f0, upp, generator)
        noise_amp = uv * NOISE_STD + (1 - uv) * SINE_AMP / 3
        sines = sines * uv + noise_amp * _randn(sines.shape, sines, generator)
        # 4.1 draws one more noise tensor here whose value is never used; it is the last draw
        # of the call, so leaving it out changes no output.
        return torch.tanh(self.l_linear(sines.to(self.l_linear.weight.dtype)))


class Generator(nn.Module):
    """NSF-HiFiGAN generator: x [B, in_channels, T], f0 [B, T] (Hz) -> audio [B, 1, T*prod(rates)]."""

    def __init__(
        self,
        in_channels: int,
        resblock: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        sampling_rate: int = 44100,
        gin_channels: int = 0,
        source: SourceKind = "sample",
        snake: bool = False,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.upp = math.prod(upsample_rates)
        sovits_padding = source == "sample"
        self.m_source = SourceModuleHnNSF(sampling_rate, source)
        self.noise_convs = nn.ModuleList()
        self.conv_pre = WNConv1d(in_channels, upsample_initial_channel, 7, 1, padding=3)
        block = ResBlock1 if str(resblock) == "1" else ResBlock2
        activation = Activation1d if snake else None
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            c_in, c_out = upsample_initial_channel // 2 ** i, upsample_initial_channel // 2 ** (i + 1)
            pad = (k - u + 1) // 2 if sovits_padding else (k - u) // 2
            self.ups.append(WNConvTranspose1d(c_in, c_out, k, u, padding=pad))
            if i + 1 < len(upsample_rates):
                s = math.prod(upsample_rates[i + 1:])
                self.noise_convs.append(nn.Conv1d(1, c_out, kernel_size=2 * s, stride=s,
                                                  padding=(s + 1) // 2 if sovits_padding else s // 2))
            else:
                self.noise_convs.append(nn.Conv1d(1, c_out, kernel_size=1))
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i in range(len(self.ups)):
            ch = upsample_initial_channel // 2 ** (i + 1)
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(ch, k, tuple(d), activation=activation))
        if snake:
            self.snakes = nn.ModuleList([Activation1d(upsample_initial_channel // 2 ** i)
                                         for i in range(len(self.ups))])
        self.conv_post = WNConv1d(ch, 1, 7, 1, padding=3)
        if snake:
            self.snake_post = Activation1d(ch)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)
        self.snake = snake

    def forward(self, x: Tensor, f0: Tensor, g: Tensor | None = None,
                generator: torch.Generator | None = None, return_source: bool = False,
                har_source: Tensor | None = None):
        """x [B, C, T], f0 [B, T], g [B, gin, 1 or T] -> audio [B, 1, T*upp] (and source [B, T*upp, 1]).
        har_source: the harmonic source, when computed outside (the ONNX Runtime graph takes it as an input)."""
        if har_source is None:
            har_source = self.m_source(f0, self.upp, generator)
        source = har_source.transpose(1, 2)
        x = self.conv_pre(x)
        if g is not None:
            x = x + self.cond(g)
        if fast_paths():  # inference: every tensor changed in place below is a fresh result nobody else holds
            return self._forward_in_place(x, har_source, return_source)
        for i in range(self.num_upsamples):
            x = self.snakes[i](x) if self.snake else F.leaky_relu(x, LRELU_SLOPE)
            x = self.ups[i](x)
            x = x + self.noise_convs[i](source)
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        # The last activation uses PyTorch's default slope 0.01 (not 0.1), as trained.
        x = self.snake_post(x) if self.snake else F.leaky_relu(x)
        audio = torch.tanh(self.conv_post(x))
        return (audio, har_source) if return_source else audio

    def _forward_in_place(self, x: Tensor, har_source: Tensor, return_source: bool):
        """`forward` after the conditioning, with the same arithmetic done in place (no autograd). On the CPU the
        source is a contiguous [B, 1, N] (as a transpose of [B, N, 1] it sends oneDNN's noise convolutions to a
        channels-last kernel ~50x slower; same numbers) and the narrow upsamplers are polyphase convolutions."""
        forms = conv_forms(x)
        source = har_source.reshape(har_source.size(0), 1, -1) if forms else har_source.transpose(1, 2)
        for i in range(self.num_upsamples):
            x = self.snakes[i](x) if self.snake else F.leaky_relu_(x, LRELU_SLOPE)
            up = self.ups[i]
            x = (conv_transpose_polyphase(up, x) if forms and polyphase_fits(up) else up(x)).add_(
                self.noise_convs[i](source))
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs.add_(self.resblocks[i * self.num_kernels + j](x))
            x = xs.div_(self.num_kernels)
        x = self.snake_post(x) if self.snake else F.leaky_relu_(x)
        audio = self.conv_post(x).tanh_()
        return (audio, har_source) if return_source else audio

    def remove_weight_norm(self) -> None:
        remove_weight_norm(self)
