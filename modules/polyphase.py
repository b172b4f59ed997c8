"""Transposed convolutions as polyphase convolutions, for inference on the CPU.

A ConvTranspose1d with stride u and kernel k = q u writes each output phase r (samples r, r + u, ...) as an
ordinary q-tap convolution of the input with every u-th kernel tap, reversed. oneDNN runs the decoder's narrow
transposed convolutions (32-256 input channels over 7k-221k samples) 1.4-4x slower than these plain
convolutions plus one interleaving copy (measured at 1 thread); the results differ only in float rounding
(~1e-6). The wide first upsampler (512 channels over a few hundred frames) is faster as it is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MAX_OUT_CHANNELS", "conv_forms", "conv_transpose_polyphase", "polyphase_fits"]

MAX_OUT_CHANNELS = 128  # wider upsamplers (short inputs) were as fast or faster in oneDNN


def conv_forms(x: Tensor) -> bool:
    """Whether the decoder may use its CPU convolution forms on ``x``: a CPU tensor, not while tracing (the ONNX
    export records the standard ops)."""
    return x.device.type == "cpu" and not torch.jit.is_tracing()


def polyphase_fits(conv: nn.ConvTranspose1d) -> bool:
    """Whether `conv_transpose_polyphase` computes ``conv``: a plain weight (after `remove_weight_norm`), no
    groups, dilation or output padding, k a multiple of u, the output exactly u times the input (k - u = 2
    padding), at most `MAX_OUT_CHANNELS` outputs."""
    if not isinstance(getattr(conv, "weight", None), Tensor):
        return False
    (k,), (u,), (p,) = conv.kernel_size, conv.stride, conv.padding
    return (conv.groups == 1 and conv.dilation == (1,) and conv.output_padding == (0,)
            and conv.padding_mode == "zeros" and k % u == 0 and k - u == 2 * p
            and conv.out_channels <= MAX_OUT_CHANNELS)


def conv_transpose_polyphase(conv: nn.ConvTranspose1d, x: Tensor) -> Tensor:
    """``conv(x)``, x [B, Cin, n] -> [B, Cout, n u], where `polyphase_fits`.

    Output sample n u + r is full-output sample n u + r + p = (n + a) u + b with a, b = divmod(r + p, u), the sum
    over i < q of x[n + a - i] W[:, :, b + i u]. Phases sharing a are one convolution (their taps stacked as
    output channels) over the input shifted by a."""
    (k,), (u,), (p,) = conv.kernel_size, conv.stride, conv.padding
    batch, c_in, n = x.shape
    c_out, q = conv.out_channels, k // u
    taps = conv.weight.view(c_in, c_out, q, u).flip(2)  # [Cin, Cout, q, u], tap order of a convolution
    bias = conv.bias if conv.bias is not None else x.new_zeros(c_out)
    first, last = p // u, (u - 1 + p) // u
    padded = F.pad(x, (q - 1 - first, last))
    out = x.new_empty(batch, c_out, n, u)
    for a in range(first, last + 1):
        r0, r1 = max(0, a * u - p), min(u, (a + 1) * u - p)  # phases with this shift
        b0, nb = (r0 + p) % u, r1 - r0
        weight = taps[:, :, :, b0:b0 + nb].permute(1, 3, 0, 2).reshape(c_out * nb, c_in, q)
        phases = F.conv1d(padded[..., a - first:a - first + n + q - 1], weight, bias.repeat_interleave(nb))
        out[..., r0:r1] = phases.view(batch, c_out, nb, n).transpose(2, 3)
    return out.view(batch, c_out, n * u)
