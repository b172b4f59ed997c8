"""Salience -> pitch decoding shared by RMVPE and FCPE: a weighted average of bin pitches around the
arg-max bin ("local average"), frames whose peak salience is at or below a threshold unvoiced."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

# Bins taken on each side of the arg-max (9 in all).
LOCAL_RADIUS = 4


def local_average(
    salience: Tensor, bin_values: Tensor, edge: Literal["zero", "clamp"]
) -> tuple[Tensor, Tensor]:
    """Salience-weighted mean of ``bin_values`` over the 9 bins centred on each frame's arg-max.

    Args:
        salience: [..., C] non-negative scores (sigmoid outputs).
        bin_values: [C] value of each bin (cents).
        edge: what a window reaching past the first/last bin sees. ``"zero"`` (RMVPE): bins outside
            weigh nothing, as if the salience were zero-padded. ``"clamp"`` (FCPE): the index is
            clamped, so the edge bin is counted once per out-of-range position.

    Returns:
        (average [...] in the dtype of ``salience``, peak salience [...]).
    """
    n_bins = salience.shape[-1]
    peak, centre = torch.max(salience, dim=-1, keepdim=True)
    offsets = torch.arange(-LOCAL_RADIUS, LOCAL_RADIUS + 1, device=salience.device)
    index = centre + offsets
    inside = (index >= 0) & (index < n_bins)
    index = index.clamp(0, n_bins - 1)
    weights = torch.gather(salience, -1, index)
    if edge == "zero":
        weights = weights * inside
    elif edge != "clamp":
        raise ValueError(f"edge must be 'zero' or 'clamp', got {edge!r}")
    values = bin_values.to(salience)[index]
    average = torch.sum(weights * values, dim=-1) / torch.sum(weights, dim=-1)
    return average, peak.squeeze(-1)


def cents_to_hz(cents: Tensor) -> Tensor:
    """Pitch in cents relative to 10 Hz -> Hz: 10 * 2^(cents / 1200) (any shape)."""
    return 10.0 * 2.0 ** (cents / 1200.0)
