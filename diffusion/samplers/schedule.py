"""The discrete VP noise schedule seen in continuous time, shared by DPM-Solver(++) and UniPC.

A model trained on the discrete steps n = 0 .. N-1 of a DDPM schedule is solved as an ODE in
continuous time t in [1/N, 1]: step n sits at t = (n + 1) / N, log alpha_t (the log of the
marginal mean coefficient, 0.5 * log of the cumulative product of 1 - beta) is linear between
those points, sigma_t = sqrt(1 - alpha_t^2), and lambda_t = log alpha_t - log sigma_t is the
half log-SNR the solvers step in (Lu et al. 2022, "DPM-Solver", section 3 and appendix).

Shallow diffusion builds the schedule from the first ``t_start`` betas only (N = t_start), so the
solver runs from t = 1 (the shallow start, step t_start - 1) down to t = 1/N (step 0).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from diffusion.diffusion import GaussianDiffusion


def _interp(x: Tensor, xp: Tensor, yp: Tensor) -> Tensor:
    """Piecewise-linear y(x) through the knots (xp, yp), xp increasing, extended linearly past both ends.

    x: any shape; xp, yp: [K] with K >= 1. Returns y with the shape of x.
    """
    if xp.numel() == 1:
        return torch.full_like(x, float(yp[0]))
    flat = x.reshape(-1).contiguous()
    # index of the segment [k, k + 1] that holds x; outside the knots the end segments extrapolate
    k = (torch.searchsorted(xp, flat) - 1).clamp(0, xp.numel() - 2)
    x0, x1, y0, y1 = xp[k], xp[k + 1], yp[k], yp[k + 1]
    return (y0 + (flat - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)


class DiscreteVPSchedule:
    """Continuous-time view of the discrete schedule ``betas`` [N].

    Args:
        betas: [N] betas of the discrete steps 0 .. N-1 (its dtype is kept).
        clip_lambda: when given, drop the final steps whose lambda is below this value (the
            DPM-Solver reference does this with -5.1 to keep the log-SNR of cosine-like schedules
            finite; the 1000-step linear schedule of so-vits never reaches it).
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
    """Solver steps for a start at ``t_start`` with speed-up ``speedup``: t_start // speedup, at least 1.

    4.1 asserts on fewer steps than the solver order (k_step < 2 * speedup); one step here is a
    first-order (DDIM-like) step, like what ddim does for a k_step below the speed-up.
    """
    if t_start < 1 or speedup < 1:
        raise ValueError(f"t_start and speedup must be >= 1, got t_start={t_start}, speedup={speedup}")
    return max(t_start // speedup, 1)


class ContinuousTimeDenoiser:
    """The network as a function of continuous time: noise prediction, or data prediction x0.

    Calls ``diffusion.denoise_fn(x [B,1,M,T], step [B] float, cond [B,H,T])`` with the float step
    ``schedule.model_time(t)``; data prediction is x0 = (x - sigma_t * eps) / alpha_t.
    ``calls`` counts the network evaluations.
    """

    def __init__(self, diffusion: "GaussianDiffusion", schedule: DiscreteVPSchedule, cond: Tensor,
                 data_prediction: bool) -> None:
        self.denoise_fn: Callable[[Tensor, Tensor, Tensor], Tensor] = diffusion.denoise_fn
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
