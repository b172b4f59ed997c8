"""The discrete-step samplers: ancestral DDPM ("speedup" <= 1), DDIM ("ddim") and PNDM ("pndm").

DDIM and PNDM visit the multiples of `speedup` below `t_start`, largest first (t_start 25, stride
10 -> 20, 10, 0, as 4.1 does), and step from t to p = max(t - speedup, 0).
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffusion.samplers import Diffusion, progress
from diffusion.samplers.schedule import extract

__all__ = ["ddim", "ddim_step", "ddpm", "multistep_eps", "p_sample", "pndm", "strided_steps", "transfer"]


def _steps(t: int, batch: int, like: Tensor) -> Tensor:
    return torch.full((batch,), t, dtype=torch.long, device=like.device)


# -- DDPM (Ho et al. 2020, algorithm 2) -----------------------------------------------------------
def p_sample(diffusion: Diffusion, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
    """One ancestral step x_t -> x_{t-1}; x [B, 1, M, T], t [B] long (all equal), cond [B, H, T]."""
    eps = diffusion.denoise_fn(x, t, cond)
    x0 = diffusion.predict_start_from_noise(x, t, eps).clamp_(-1.0, 1.0)
    mean, log_var = diffusion.q_posterior(x0, x, t)
    # Drawn at t = 0 too, so a seeded run consumes the random stream as 4.1 did.
    noise = diffusion.noise_like(x)
    # No noise on the last step: its posterior variance is 0 (only floored for the log).
    keep = (t != 0).to(x.dtype).reshape(-1, *((1,) * (x.dim() - 1)))
    return mean + keep * torch.exp(0.5 * log_var) * noise


def ddpm(diffusion: Diffusion, x: Tensor, cond: Tensor, t_start: int, speedup: int,
         use_tqdm: bool = False) -> Tensor:
    """Every step t_start-1 .. 0; `speedup` is ignored."""
    for i in progress(list(reversed(range(t_start))), use_tqdm):
        x = p_sample(diffusion, x, _steps(i, x.shape[0], x), cond)
    return x


# -- DDIM (Song et al. 2021, eta = 0) --------------------------------------------------------------
def strided_steps(t_start: int, speedup: int) -> list[int]:
    """Steps visited by DDIM and PNDM: reversed(range(0, t_start, speedup))."""
    return list(reversed(range(0, t_start, speedup)))


def ddim_step(diffusion: Diffusion, x: Tensor, t: Tensor, interval: int, cond: Tensor) -> Tensor:
    """x_t [B, 1, M, T] at steps t [B] long -> x at max(t - interval, 0)."""
    a_t = extract(diffusion.alphas_cumprod, t, x.dim())
    a_prev = extract(diffusion.alphas_cumprod, torch.clamp(t - interval, min=0), x.dim())
    eps = diffusion.denoise_fn(x, t, cond)
    return a_prev.sqrt() * (x / a_t.sqrt() + (((1 - a_prev) / a_prev).sqrt() - ((1 - a_t) / a_t).sqrt()) * eps)


def ddim(diffusion: Diffusion, x: Tensor, cond: Tensor, t_start: int, speedup: int,
         use_tqdm: bool = False) -> Tensor:
    """Deterministic DDIM with stride `speedup`."""
    for i in progress(strided_steps(t_start, speedup), use_tqdm):
        x = ddim_step(diffusion, x, _steps(i, x.shape[0], x), speedup, cond)
    return x


# -- PNDM / PLMS (Liu et al. 2022) -----------------------------------------------------------------
def transfer(diffusion: Diffusion, x: Tensor, eps: Tensor, t: Tensor, prev: Tensor) -> Tensor:
    """The paper's transfer phi: x [B, 1, M, T] at steps t [B] -> x at steps prev [B] given noise eps."""
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


def pndm(diffusion: Diffusion, x: Tensor, cond: Tensor, t_start: int, speedup: int,
         use_tqdm: bool = False) -> Tensor:
    """PNDM with stride `speedup`; the first step (no history yet) averages the estimates at t and,
    after a trial transfer, at p (two network calls)."""
    history: list[Tensor] = []
    for i in progress(strided_steps(t_start, speedup), use_tqdm):
        t = _steps(i, x.shape[0], x)
        # A tensor even when k_step <= stride (4.1 passed the int 0 here and crashed).
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
