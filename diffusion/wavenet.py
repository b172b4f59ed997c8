"""The shallow-diffusion denoiser: a non-causal WaveNet over mel frames (DiffWave / DiffSinger design)
predicting the noise in a noised, normalised mel. Parameter names are 4.1's checkpoint keys."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ResidualBlock", "WaveNet", "step_embedding"]


def _conv1d(in_channels: int, out_channels: int) -> nn.Conv1d:
    """1x1 Conv1d with He-normal weights (outer projections only, as in 4.1, so seeded fresh models match)."""
    conv = nn.Conv1d(in_channels, out_channels, 1)
    nn.init.kaiming_normal_(conv.weight)
    return conv


def step_embedding(step: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Steps [B] (float for DPM-Solver / UniPC) -> [B, dim]: sin, cos of step * 10000^(-j / (dim/2 - 1))."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=step.device, dtype=dtype) * -scale)
    angles = step.to(dtype)[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class ResidualBlock(nn.Module):
    """Gated residual layer (step bias, kernel-3 conv, condition, tanh/sigmoid gate) over C = n_chans channels."""

    def __init__(self, n_hidden: int, n_chans: int, dilation: int = 1) -> None:
        super().__init__()
        self.n_chans = n_chans
        self.dilated_conv = nn.Conv1d(n_chans, 2 * n_chans, 3, padding=dilation, dilation=dilation)
        self.diffusion_projection = nn.Linear(n_chans, n_chans)
        self.conditioner_projection = nn.Conv1d(n_hidden, 2 * n_chans, 1)
        self.output_projection = nn.Conv1d(n_chans, 2 * n_chans, 1)

    def forward(self, x: Tensor, cond: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, C, T], cond [B, H, T], step embedding [B, C] -> (residual out [B, C, T], skip [B, C, T])."""
        y = x + self.diffusion_projection(step).unsqueeze(-1)
        y = self.dilated_conv(y) + self.conditioner_projection(cond)
        gate, filt = torch.split(y, self.n_chans, dim=1)
        y = self.output_projection(torch.sigmoid(gate) * torch.tanh(filt))
        residual, skip = torch.split(y, self.n_chans, dim=1)
        # Scaling by 1/sqrt(2) keeps the variance of the residual stream constant across layers.
        return (x + residual) / math.sqrt(2.0), skip


class WaveNet(nn.Module):
    """Noise predictor eps(x_t, t, cond) over in_dims mel bins M with condition channels H = n_hidden."""

    def __init__(self, in_dims: int = 128, n_layers: int = 20, n_chans: int = 384, n_hidden: int = 256) -> None:
        super().__init__()
        self.n_chans = n_chans
        self.input_projection = _conv1d(in_dims, n_chans)
        self.mlp = nn.Sequential(nn.Linear(n_chans, n_chans * 4), nn.Mish(), nn.Linear(n_chans * 4, n_chans))
        self.residual_layers = nn.ModuleList([ResidualBlock(n_hidden, n_chans, 1) for _ in range(n_layers)])
        self.skip_projection = _conv1d(n_chans, n_chans)
        self.output_projection = _conv1d(n_chans, in_dims)
        # A zero last layer makes the untrained model predict "no noise", a stable start for training.
        nn.init.zeros_(self.output_projection.weight)

    def forward(self, spec: Tensor, diffusion_step: Tensor, cond: Tensor) -> Tensor:
        """spec [B, 1, M, T], diffusion_step [B] (int or float), cond [B, H, T] -> noise [B, 1, M, T]."""
        x = torch.relu(self.input_projection(spec.squeeze(1)))
        step = self.mlp(step_embedding(diffusion_step, self.n_chans, self.mlp[0].weight.dtype))
        skips = []
        for layer in self.residual_layers:
            x, skip = layer(x, cond, step)
            skips.append(skip)
        x = torch.stack(skips).sum(dim=0) / math.sqrt(len(self.residual_layers))
        x = self.output_projection(torch.relu(self.skip_projection(x)))
        return x.unsqueeze(1)
