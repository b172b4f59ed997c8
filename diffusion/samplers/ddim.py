"""Deterministic DDIM sampling (Song et al. 2021, eta = 0) with a fixed stride.

Visits t = the multiples of `speedup` below `t_start`, largest first (t_start 25, stride 10 -> 20, 10,
0, as 4.1 does: the first step is not t_start - 1). Each step maps x_t to the previous visited step
p = max(t - speedup, 0):
    x_p = sqrt(abar_p) * (x_t / sqrt(abar_t) + (sqrt((1 - abar_p) / abar_p) - sqrt((1 - abar_t) / abar_t)) * eps)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffusion.diffusion import extract
from diffusion.samplers import progress

if TYPE_CHECKING:
    from diffusion.diffusion import GaussianDiffusion

__all__ = ["ddim_step", "sample", "strided_steps"]


def strided_steps(t_start: int, speedup: int) -> list[int]:
    """Steps visited by the strided samplers: reversed(range(0, t_start, speedup))."""
    return list(reversed(range(0, t_start, speedup)))


def ddim_step(diffusion: "GaussianDiffusion", x: Tensor, t: Tensor, interval: int, cond: Tensor) -> Tensor:
    """x_t [B, 1, M, T] at steps t [B] long -> x at max(t - interval, 0)."""
    a_t = extract(diffusion.alphas_cumprod, t, x.dim())
    a_prev = extract(diffusion.alphas_cumprod, torch.clamp(t - interval, min=0), x.dim())
    eps = diffusion.denoise_fn(x, t, cond)
    return a_prev.sqrt() * (x / a_t.sqrt() + (((1 - a_prev) / a_prev).sqrt() - ((1 - a_t) / a_t).sqrt()) * eps)


def sample(diffusion: "GaussianDiffusion", x: Tensor, cond: Tensor, t_start: int, speedup: int,
           use_tqdm: bool = False) -> Tensor:
    """DDIM from depth t_start with stride `speedup`: x [B, 1, M, T], cond [B, H, T] -> [B, 1, M, T]."""
    batch = x.shape[0]
    for i in progress(strided_steps(t_start, speedup), use_tqdm, "sample time step"):
        x = ddim_step(diffusion, x, torch.full((batch,), i, dtype=torch.long, device=x.device), speedup, cond)
    return x
