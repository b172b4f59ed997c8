"""Anti-aliased SnakeBeta activation of the ``nsf-snake-hifigan`` decoder: x2 Kaiser-sinc upsampling,
SnakeBeta, low-pass x2 downsampling (replicate padding on both steps).

The ``filter`` buffers keep their checkpoint names so state dicts match, but the computation always
uses the filter designed from the formula, as the original does: loaded buffer values never matter.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """Windowed-sinc low-pass filter [1, 1, kernel_size] normalised to unit DC gain."""
    even = kernel_size % 2 == 0
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    attenuation = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    time = torch.arange(-half_size, half_size) + 0.5 if even else torch.arange(kernel_size) - half_size
    if cutoff == 0:
        filt = torch.zeros_like(time)
    else:
        filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
        filt = filt / filt.sum()
    return filt.view(1, 1, kernel_size)


class _FixedFilter(nn.Module):
    """Holds a designed filter both as checkpoint buffer ``filter`` and as the working copy."""

    def __init__(self, filt: Tensor) -> None:
        super().__init__()
        self.register_buffer("filter", filt.clone())
        self._design = filt
        self._cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def kernel(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self._design.to(device=like.device, dtype=like.dtype)
        return self._cache[key]


class UpSample1d(_FixedFilter):
    """x2 (or ``ratio``) band-limited upsampling of [B, C, T] -> [B, C, ratio*T]."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        super().__init__(kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, kernel_size))
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.pad_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.pad_right = self.pad * ratio + (kernel_size - ratio + 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        channels = x.size(1)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        weight = self.kernel(x).expand(channels, -1, -1)
        x = self.ratio * F.conv_transpose1d(x, weight, stride=self.ratio, groups=channels)
        return x[..., self.pad_left:-self.pad_right]


class LowPassFilter1d(_FixedFilter):
    """Strided low-pass filtering with replicate padding."""

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int) -> None:
        super().__init__(kaiser_sinc_filter1d(cutoff, half_width, kernel_size))
        even = kernel_size % 2 == 0
        self.pad_left = kernel_size // 2 - int(even)
        self.pad_right = kernel_size // 2
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        channels = x.size(1)
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.kernel(x).expand(channels, -1, -1), stride=self.stride, groups=channels)


class DownSample1d(nn.Module):
    """x2 (or ``ratio``) band-limited downsampling, [B, C, T] -> [B, C, T/ratio]."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        super().__init__()
        kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """x + 1/(e^beta + 1e-9) * sin^2(x * e^alpha), per channel (alpha, beta in log scale)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = torch.exp(self.alpha).view(1, -1, 1)
        beta = torch.exp(self.beta).view(1, -1, 1)
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    """upsample -> SnakeBeta -> downsample (keys ``act``, ``upsample``, ``downsample``)."""

    def __init__(self, channels: int, up_ratio: int = 2, down_ratio: int = 2,
                 up_kernel_size: int = 12, down_kernel_size: int = 12) -> None:
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample1d(up_ratio, up_kernel_size)
        self.downsample = DownSample1d(down_ratio, down_kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))
