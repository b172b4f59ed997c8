"""WaveNet stack, HiFi-GAN residual blocks and the coupling flows of SynthesizerTrn."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.runtime import fast_paths
from modules.attentions import FFT
from modules.commons import WNConv1d, gated_tanh_sigmoid, get_padding

LRELU_SLOPE = 0.1


class DSConv(nn.Module):
    """Depthwise-separable dilated conv: depth_conv (groups=C) + point_conv (1x1), each weight-normalised."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 dilation: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.depth_conv = WNConv1d(in_channels, in_channels, kernel_size, groups=in_channels,
                                   dilation=dilation, padding=padding)
        self.point_conv = WNConv1d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.point_conv(self.depth_conv(x))


def dilated_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int,
                 depthwise: bool) -> nn.Module:
    """A weight-normed 'same'-padded dilated conv, or its depthwise-separable variant."""
    padding = get_padding(kernel_size, dilation)
    if depthwise:
        return DSConv(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding)
    return WNConv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding)


class WN(nn.Module):
    """Non-causal gated WaveNet: x [B, H, T], x_mask [B, 1, T], g [B, gin, 1 or T] -> skip sum [B, H, T]."""

    def __init__(self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int = 0, p_dropout: float = 0.0, use_depthwise_conv: bool = False) -> None:
        super().__init__()
        assert kernel_size % 2 == 1
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(p_dropout)
        if gin_channels:
            self.cond_layer = WNConv1d(gin_channels, 2 * hidden_channels * n_layers, 1)
        for i in range(n_layers):
            self.in_layers.append(dilated_conv(hidden_channels, 2 * hidden_channels, kernel_size,
                                               dilation_rate ** i, use_depthwise_conv))
            out = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(WNConv1d(hidden_channels, out, 1))

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None) -> Tensor:
        h = self.hidden_channels
        output = torch.zeros_like(x)
        if g is not None:
            g = self.cond_layer(g)
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)
            g_l = g[:, 2 * h * i:2 * h * (i + 1), :] if g is not None else torch.zeros_like(x_in)
            acts = self.drop(gated_tanh_sigmoid(x_in, g_l, h))
            res_skip = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :h, :]) * x_mask
                output = output + res_skip[:, h:, :]
            else:
                output = output + res_skip
        return output * x_mask


def _leaky_relu(_channels: int) -> nn.Module:
    return nn.LeakyReLU(LRELU_SLOPE)


ActivationFactory = Callable[[int], nn.Module]


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1: pairs of (dilated conv, conv) with residual adds. ``activation(channels)``
    builds each pre-conv activation: leaky ReLU 0.1 by default (nothing registered), or the snake decoder's
    anti-aliased SnakeBeta, registered as ``activations`` (2 per dilation)."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3, 5),
                 activation: ActivationFactory | None = None) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList([
            WNConv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d))
            for d in dilation])
        self.convs2 = nn.ModuleList([
            WNConv1d(channels, channels, kernel_size, dilation=1, padding=get_padding(kernel_size, 1))
            for _ in dilation])
        if activation is None:
            self._acts: list[nn.Module] = [_leaky_relu(channels) for _ in range(2 * len(dilation))]
        else:
            self.activations = nn.ModuleList([activation(channels) for _ in range(2 * len(dilation))])
            self._acts = list(self.activations)

    def forward(self, x: Tensor, x_mask: Tensor | None = None) -> Tensor:
        # Inference with leaky ReLU: the second activation and the residual add reuse the fresh conv output.
        in_place = x_mask is None and not hasattr(self, "activations") and fast_paths()
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            xt = c1(self._masked(self._acts[2 * i](x), x_mask))
            if in_place:
                x = c2(F.leaky_relu_(xt, LRELU_SLOPE)).add_(x)
                continue
            xt = c2(self._masked(self._acts[2 * i + 1](xt), x_mask))
            x = xt + x
        return self._masked(x, x_mask)

    @staticmethod
    def _masked(x: Tensor, x_mask: Tensor | None) -> Tensor:
        return x if x_mask is None else x * x_mask


class ResBlock2(nn.Module):
    """HiFi-GAN residual block type 2: one dilated conv per dilation with residual adds."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3),
                 activation: ActivationFactory | None = None) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            WNConv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d))
            for d in dilation])
        if activation is None:
            self._acts: list[nn.Module] = [_leaky_relu(channels) for _ in dilation]
        else:
            self.activations = nn.ModuleList([activation(channels) for _ in dilation])
            self._acts = list(self.activations)

    def forward(self, x: Tensor, x_mask: Tensor | None = None) -> Tensor:
        for conv, act in zip(self.convs, self._acts):
            xt = act(x)
            if x_mask is not None:
                xt = xt * x_mask
            x = conv(xt) + x
        return x if x_mask is None else x * x_mask


class Flip(nn.Module):
    """Reverses the channel order; its own inverse."""

    def forward(self, x: Tensor, x_mask: Tensor | None = None, g: Tensor | None = None,
                reverse: bool = False) -> Tensor:
        return torch.flip(x, [1])


class CouplingLayer(nn.Module):
    """Mean-only affine coupling x1 <- x1 + post(enc(pre(x0))) (reverse subtracts); ``enc`` is a WaveNet or a
    conditioned causal FFT, shared by every layer with parameter sharing; ``post`` starts at zero (identity)."""

    def __init__(self, channels: int, hidden_channels: int, enc: nn.Module) -> None:
        super().__init__()
        assert channels % 2 == 0, "channels should be divisible by 2"
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = enc
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None, reverse: bool = False) -> Tensor:
        x0, x1 = torch.split(x, [self.half_channels] * 2, 1)
        h = self.enc(self.pre(x0) * x_mask, x_mask, g=g)
        m = self.post(h) * x_mask
        x1 = m + x1 * x_mask if not reverse else (x1 - m) * x_mask
        return torch.cat([x0, x1], 1)


class CouplingBlock(nn.Module):
    """n_flows couplings, each followed by a Flip: [B, C, T] -> [B, C, T]; reverse for inference. With
    ``share_parameter`` one network (``wn``) serves every layer: its tensors appear under ``flows.{0,2,..}.enc.*``
    and ``wn.*`` alike."""

    def __init__(self, channels: int, hidden_channels: int, n_flows: int,
                 make_enc: Callable[[], nn.Module], share_parameter: bool = False) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        self.wn = make_enc() if share_parameter else None
        for _ in range(n_flows):
            enc = self.wn if self.wn is not None else make_enc()
            self.flows.append(CouplingLayer(channels, hidden_channels, enc))
            self.flows.append(Flip())

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None, reverse: bool = False) -> Tensor:
        flows = reversed(self.flows) if reverse else self.flows
        for flow in flows:
            x = flow(x, x_mask, g=g, reverse=reverse)
        return x


def residual_coupling_block(channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                            n_layers: int, n_flows: int = 4, gin_channels: int = 0,
                            share_parameter: bool = False, use_depthwise_conv: bool = False) -> CouplingBlock:
    """WaveNet coupling flow (the default ``flow``)."""
    def make_wn() -> nn.Module:
        return WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels,
                  use_depthwise_conv=use_depthwise_conv)
    return CouplingBlock(channels, hidden_channels, n_flows, make_wn, share_parameter)


def transformer_coupling_block(channels: int, hidden_channels: int, filter_channels: int, n_heads: int,
                               n_layers: int, kernel_size: int, p_dropout: float, n_flows: int = 4,
                               gin_channels: int = 0, share_parameter: bool = False) -> CouplingBlock:
    """Transformer coupling flow (``use_transformer_flow``)."""
    def make_fft() -> nn.Module:
        return FFT(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout,
                   isflow=True, gin_channels=gin_channels)
    return CouplingBlock(channels, hidden_channels, n_flows, make_fft, share_parameter)
