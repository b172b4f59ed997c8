"""Noise schedules: the discrete DDPM schedule with its per-step lookup, and its continuous-time
view used by DPM-Solver(++) and UniPC.

Continuous time (Lu et al. 2022, "DPM-Solver", section 3): step n of N sits at t = (n + 1) / N,
log alpha_t is linear between those points, sigma_t = sqrt(1 - alpha_t^2) and the solvers step in
the half log-SNR lambda_t = log alpha_t - log sigma_t. Shallow diffusion builds it from the first
`t_start` betas only, so a solver runs from t = 1 (step t_start - 1) down to t = 1/N (step 0).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffusion.samplers import Diffusion

__all__ = ["ContinuousTimeDenoiser", "DiscreteVPSchedule", "extract", "linear_schedule", "solver_steps"]


def linear_schedule(timesteps: int, max_beta: float) -> dict[str, np.ndarray]:
    """Linear betas 1e-4 .. max_beta and the DDPM quantities derived from them, float64 [timesteps]."""
    betas = np.linspace(1e-4, max_beta, timesteps)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas, axis=0)
    abar_prev = np.append(1.0, abar[:-1])
    # Variance of q(x_{t-1} | x_t, x_0); it is 0 at t = 0, so its log is floored.
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        "log_one_minus_alphas_cumprod": np.log(1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    }


def extract(a: Tensor, t: Tensor, ndim: int = 4) -> Tensor:
    """Per-item schedule values a[t] for t [B] long, shaped [B, 1, ...] to broadcast over `ndim` dims."""
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))


def _interp(x: Tensor, xp: Tensor, yp: Tensor) -> Tensor:
    """Piecewise-linear y(x) through knots xp [K] (increasing), yp [K], extrapolated past both ends."""
    if xp.numel() == 1:
        return torch.full_like(x, float(yp[0]))
    flat = x.reshape(-1).contiguous()
    # index of the segment [k, k + 1] that holds x; outside the knots the end segments extrapolate
    k = (torch.searchsorted(xp, flat) - 1).clamp(0, xp.numel() - 2)
    x0, x1, y0, y1 = xp[k], xp[k + 1], yp[k], yp[k + 1]
    return (y0 + (flat - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)


class DiscreteVPSchedule:
    """Continuous-time view of the discrete schedule `betas` [N] (its dtype is kept).

    clip_lambda: drop the final steps whose lambda is below it (never reached by 1000 linear betas).
    """

    def __init__(self, betas: Tensor, clip_lambda: float | None = None) -> None:
        if betas.dim() != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        log_alpha = 0.5 * torch.log(1 - betas).cumsum(dim=0)
        if clip_lambda is not None:
            lambdas = log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))
            # lambda decreases with n; count the trailing steps below the limit
            below = int((lambdas < clip_lambda).sum())
            if below > 0:
                log_alpha = log_alpha[:-below]
        self.total_n = int(log_alpha.numel())
        self.log_alpha_array = log_alpha
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1, dtype=betas.dtype, device=betas.device)[1:]

    def marginal_log_mean_coeff(self, t: Tensor) -> Tensor:
        """log alpha_t for times ``t`` (any shape)."""
        return _interp(t, self.t_array, self.log_alpha_array)

    def marginal_alpha(self, t: Tensor) -> Tensor:
        """alpha_t = exp(log alpha_t)."""
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t: Tensor) -> Tensor:
        """sigma_t = sqrt(1 - alpha_t^2)."""
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t: Tensor) -> Tensor:
        """Half log-SNR lambda_t = log alpha_t - log sigma_t."""
        log_alpha = self.marginal_log_mean_coeff(t)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))

    def inverse_lambda(self, lamb: Tensor) -> Tensor:
        """The time t with marginal_lambda(t) == lamb (up to the piecewise-linear interpolation)."""
        # alpha^2 = sigmoid(2 lambda), so log alpha = -0.5 * log(1 + exp(-2 lambda))
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lamb), -2.0 * lamb)
        return _interp(log_alpha, torch.flip(self.log_alpha_array, [0]), torch.flip(self.t_array, [0]))

    def model_time(self, t: Tensor) -> Tensor:
        """The denoiser's step input for time t: (t - 1/N) * N, a FLOAT step index (19.0 at t = 1, N = 20)."""
        return (t - 1.0 / self.total_n) * self.total_n

    def time_steps(self, steps: int) -> Tensor:
        """[steps + 1] times uniform in t from 1 down to 1/N (the "time_uniform" skip)."""
        return torch.linspace(1.0, 1.0 / self.total_n, steps + 1, dtype=self.t_array.dtype,
                              device=self.t_array.device)


def solver_steps(t_start: int, speedup: int) -> int:
    """t_start // speedup, at least 1 (4.1 asserted when k_step < 2 * speedup; one step is first-order)."""
    if t_start < 1 or speedup < 1:
        raise ValueError(f"t_start and speedup must be >= 1, got t_start={t_start}, speedup={speedup}")
    return max(t_start // speedup, 1)


class ContinuousTimeDenoiser:
    """The network as a function of continuous time, called with the float step `schedule.model_time(t)`:
    noise prediction, or data prediction x0 = (x - sigma_t * eps) / alpha_t. `calls` counts evaluations."""

    def __init__(self, diffusion: Diffusion, schedule: DiscreteVPSchedule, cond: Tensor,
                 data_prediction: bool) -> None:
        self.denoise_fn = diffusion.denoise_fn
        self.schedule = schedule
        self.cond = cond
        self.data_prediction = data_prediction
        self.calls = 0

    def noise(self, x: Tensor, t: Tensor) -> Tensor:
        """eps_hat(x_t, t) [B,1,M,T] for a scalar time t (0-dim tensor)."""
        step = self.schedule.model_time(t).expand(x.shape[0])
        out = self.denoise_fn(x, step, self.cond)
        self.calls += 1
        return out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The prediction the solver works with: x0_hat if data_prediction else eps_hat, [B,1,M,T]."""
        eps = self.noise(x, t)
        if not self.data_prediction:
            return eps
        alpha_t, sigma_t = self.schedule.marginal_alpha(t), self.schedule.marginal_std(t)
        return (x - sigma_t * eps) / alpha_t
