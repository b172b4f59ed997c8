"""Plain ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) over every step below `t_start`.

Used when `infer.speedup` <= 1 or no method is set. Each step predicts x_0 from the denoiser's noise
estimate, clamps it to [-1, 1], takes the mean of q(x_{t-1} | x_t, x_0) and adds
exp(0.5 * log_var) * z except at t = 0. A fresh z is drawn at every step, t = 0 included, so a seeded
run consumes the random stream exactly as 4.1 did.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffusion.samplers import progress

if TYPE_CHECKING:
    from diffusion.diffusion import GaussianDiffusion

__all__ = ["p_sample", "sample"]


def p_sample(diffusion: "GaussianDiffusion", x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
    """One ancestral step x_t -> x_{t-1}; x [B, 1, M, T], t [B] long (all equal), cond [B, H, T]."""
    eps = diffusion.denoise_fn(x, t, cond)
    x0 = diffusion.predict_start_from_noise(x, t, eps).clamp_(-1.0, 1.0)
    mean, log_var = diffusion.q_posterior(x0, x, t)
    noise = diffusion.noise_like(x)
    # No noise on the last step: its posterior variance is 0 (only floored for the log).
    keep = (t != 0).to(x.dtype).reshape(-1, *((1,) * (x.dim() - 1)))
    return mean + keep * torch.exp(0.5 * log_var) * noise


def sample(diffusion: "GaussianDiffusion", x: Tensor, cond: Tensor, t_start: int, speedup: int,
           use_tqdm: bool = False) -> Tensor:
    """Denoise x [B, 1, M, T] at depth t_start through steps t_start-1 .. 0; `speedup` is ignored."""
    batch = x.shape[0]
    for i in progress(list(reversed(range(t_start))), use_tqdm, "sample time step"):
        x = p_sample(diffusion, x, torch.full((batch,), i, dtype=torch.long, device=x.device), cond)
    return x
