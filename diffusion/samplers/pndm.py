"""Pseudo linear multistep sampling (PNDM / PLMS, Liu et al. 2022) with a fixed stride.

Steps are those of DDIM (`ddim.strided_steps`). The transfer from step t to p = max(t - stride, 0) is
the paper's
    phi(x, eps) = sqrt(abar_p / abar_t) x - (abar_p - abar_t) eps
                  / (sqrt(abar_t) (sqrt((1 - abar_p) abar_t) + sqrt((1 - abar_t) abar_p)))
with eps replaced by an Adams-Bashforth combination of the latest noise estimates
(weights 3, -1 / 2; 23, -16, 5 / 12; 55, -59, 37, -9 / 24). The first step has no history: it takes a
Heun-like average of the estimates at t and, after a trial transfer, at p (two network calls).

Fix against 4.1: the original evaluated the second first-step call at Python's `max(t - stride, 0)`,
which is the int 0 (not a tensor) when k_step <= stride, and crashed inside the network
(AttributeError: 'int' object has no attribute 'device'); with a batch > 1 it could not compare at all.
Here that step is a clamped [B] tensor, so k_step <= stride runs a single step at t = 0 (which leaves
the shallow start essentially unchanged) and batches work.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffusion.diffusion import extract
from diffusion.samplers import progress
from diffusion.samplers.ddim import strided_steps

if TYPE_CHECKING:
    from diffusion.diffusion import GaussianDiffusion

__all__ = ["multistep_eps", "sample", "transfer"]


def transfer(diffusion: "GaussianDiffusion", x: Tensor, eps: Tensor, t: Tensor, prev: Tensor) -> Tensor:
    """PNDM transfer phi: x [B, 1, M, T] at steps t [B] -> x at steps prev [B] given noise eps."""
    a_t = extract(diffusion.alphas_cumprod, t, x.dim())
    a_p = extract(diffusion.alphas_cumprod, prev, x.dim())
    s_t, s_p = a_t.sqrt(), a_p.sqrt()
    # Written as x + (a_p - a_t) * (...) so that the update vanishes exactly when p == t.
    delta = (a_p - a_t) * (x / (s_t * (s_t + s_p))
                           - eps / (s_t * (((1 - a_p) * a_t).sqrt() + ((1 - a_t) * a_p).sqrt())))
    return x + delta


def multistep_eps(eps: Tensor, history: list[Tensor]) -> Tensor:
    """Adams-Bashforth combination of the current estimate and up to 3 previous ones (newest last)."""
    if len(history) == 1:
        return (3 * eps - history[-1]) / 2
    if len(history) == 2:
        return (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
    return (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24


def sample(diffusion: "GaussianDiffusion", x: Tensor, cond: Tensor, t_start: int, speedup: int,
           use_tqdm: bool = False) -> Tensor:
    """PNDM from depth t_start with stride `speedup`: x [B, 1, M, T], cond [B, H, T] -> [B, 1, M, T]."""
    batch = x.shape[0]
    history: list[Tensor] = []  # per call: a second run must not see the first one's estimates
    for i in progress(strided_steps(t_start, speedup), use_tqdm, "sample time step"):
        t = torch.full((batch,), i, dtype=torch.long, device=x.device)
        prev = torch.clamp(t - speedup, min=0)
        eps = diffusion.denoise_fn(x, t, cond)
        if not history:
            x_trial = transfer(diffusion, x, eps, t, prev)
            eps_mix = (eps + diffusion.denoise_fn(x_trial, prev, cond)) / 2
        else:
            eps_mix = multistep_eps(eps, history)
        x = transfer(diffusion, x, eps_mix, t, prev)
        history = (history + [eps])[-3:]
    return x
