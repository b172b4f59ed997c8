"""Small tensor helpers shared by the networks, and weight-normalised convolutions.

The convolutions store ``weight_g`` / ``weight_v`` as the legacy ``torch.nn.utils.weight_norm`` did (the
names of every so-vits-svc checkpoint), without its deprecation warnings; ``remove_weight_norm`` folds them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of a dilated odd-sized kernel."""
    return (kernel_size * dilation - dilation) // 2


def sequence_mask(length: Tensor, max_length: int | None = None) -> Tensor:
    """Boolean mask [B, max_length] that is True for positions < length[b]."""
    if max_length is None:
        max_length = int(length.max())
    positions = torch.arange(max_length, dtype=length.dtype, device=length.device)
    return positions.unsqueeze(0) < length.unsqueeze(1)


def gated_tanh_sigmoid(a: Tensor, b: Tensor, n_channels: int) -> Tensor:
    """WaveNet gate: tanh(first half of a+b) * sigmoid(second half), [B, 2C, T] -> [B, C, T]."""
    summed = a + b
    return torch.tanh(summed[:, :n_channels]) * torch.sigmoid(summed[:, n_channels:])


def subsequent_mask(length: int, device: torch.device | None = None) -> Tensor:
    """Lower-triangular causal attention mask [1, 1, T, T]."""
    return torch.tril(torch.ones(length, length, device=device)).unsqueeze(0).unsqueeze(0)


def slice_segments(x: Tensor, ids_str: Tensor, segment_size: int) -> Tensor:
    """Crop [B, C, T] (or [B, T]) to [B, C, segment_size] windows starting at ids_str[b]."""
    out = x.new_zeros(x.shape[:-1] + (segment_size,))
    for i in range(x.size(0)):
        start = int(ids_str[i])
        out[i] = x[i, ..., start:start + segment_size]
    return out


def rand_slice_segments_with_pitch(x: Tensor, pitch: Tensor, x_lengths: Tensor,
                                   segment_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Random training windows: z [B, C, T], f0 [B, T] -> (z [B, C, S], f0 [B, S], starts [B]).

    The start of item b is floor(U(0,1) * (len_b - S + 1)), drawn with one ``torch.rand([B])``.
    """
    ids_str_max = x_lengths - segment_size + 1
    ids_str = (torch.rand([x.size(0)], device=x.device) * ids_str_max).to(dtype=torch.long)
    return slice_segments(x, ids_str, segment_size), slice_segments(pitch, ids_str, segment_size), ids_str


class _WeightNormMixin:
    """Builds the wrapped ``nn.Conv*`` (same arguments), then replaces ``weight`` by ``weight_g`` (norm,
    [out, 1, ...]) and ``weight_v`` (direction): registration order ``bias, weight_g, weight_v``, as in
    so-vits-svc state dicts and optimizer states."""

    weight_g: nn.Parameter
    weight_v: nn.Parameter

    def __init__(self, *args, **conv_options) -> None:
        super().__init__(*args, **conv_options)  # type: ignore[call-arg]
        self._apply_weight_norm()

    def _apply_weight_norm(self) -> None:
        weight = self._parameters.pop("weight")  # type: ignore[attr-defined]
        self.weight_g = nn.Parameter(torch.norm_except_dim(weight.detach(), 2, 0))
        self.weight_v = nn.Parameter(weight.detach())
        self._folded = False

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.normalised_weight(), self.bias)  # type: ignore[attr-defined]

    def normalised_weight(self) -> Tensor:
        if getattr(self, "_folded", False):
            return self.weight  # type: ignore[attr-defined]
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def remove_weight_norm(self) -> None:
        """Fold g * v / |v| into a plain ``weight`` (inference only: changes state-dict keys)."""
        if self._folded:
            return
        weight = self.normalised_weight().detach()
        del self._parameters["weight_g"]
        del self._parameters["weight_v"]
        self.weight = nn.Parameter(weight)  # type: ignore[misc]
        self._folded = True


class WNConv1d(_WeightNormMixin, nn.Conv1d):
    """Conv1d with legacy-named weight normalisation (dim 0)."""


class WNConv2d(_WeightNormMixin, nn.Conv2d):
    """Conv2d with legacy-named weight normalisation (dim 0)."""


class WNConvTranspose1d(_WeightNormMixin, nn.ConvTranspose1d):
    """ConvTranspose1d with legacy-named weight normalisation (dim 0 = input channels)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.conv_transpose1d(x, self.normalised_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-normalised layer inside ``module`` (in place); returns the module."""
    for sub in module.modules():
        if isinstance(sub, _WeightNormMixin):
            sub.remove_weight_norm()
    return module
