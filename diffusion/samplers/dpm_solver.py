"""Multistep DPM-Solver ("dpm-solver") and DPM-Solver++ ("dpm-solver++") of order 2.

From Lu et al. 2022, "DPM-Solver" (NeurIPS) and "DPM-Solver++" (arXiv:2211.01095), stepping in
lambda (half log-SNR) with h = lambda_t - lambda_s:

- noise prediction: x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps_s,
- data prediction:  x_t = (sigma_t/sigma_s) x_s - alpha_t (e^-h - 1) x0_s;

the second-order update adds 0.5 * (same factor) * D1, D1 = (m_s - m_prev) / r,
r = (lambda_s - lambda_prev) / h, of the last two network outputs m. 4.1's configuration: schedule
from betas[:t_start], t_start // speedup steps uniform in t, first step first-order, last steps
first-order only below 10 steps, no final denoising, no thresholding; one network call per step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffusion.samplers import Diffusion, progress
from diffusion.samplers.schedule import ContinuousTimeDenoiser, DiscreteVPSchedule, solver_steps

ORDER = 2
# The reference drops schedule steps whose log-SNR falls below this (never for 1000 linear betas).
CLIP_LAMBDA = -5.1
# With fewer steps than this the final steps drop to first order (the reference's lower_order_final).
LOWER_ORDER_FINAL_BELOW = 10


def first_order_update(schedule: DiscreteVPSchedule, x: Tensor, s: Tensor, t: Tensor, model_s: Tensor,
                       data_prediction: bool) -> Tensor:
    """One DPM-Solver-1 step (= DDIM) from time s to time t; model_s is x0_hat or eps_hat at s. [B,1,M,T]."""
    h = schedule.marginal_lambda(t) - schedule.marginal_lambda(s)
    log_alpha_s, log_alpha_t = schedule.marginal_log_mean_coeff(s), schedule.marginal_log_mean_coeff(t)
    sigma_s, sigma_t = schedule.marginal_std(s), schedule.marginal_std(t)
    if data_prediction:
        phi_1 = torch.expm1(-h)
        return sigma_t / sigma_s * x - torch.exp(log_alpha_t) * phi_1 * model_s
    phi_1 = torch.expm1(h)
    return torch.exp(log_alpha_t - log_alpha_s) * x - (sigma_t * phi_1) * model_s


def second_order_update(schedule: DiscreteVPSchedule, x: Tensor, models: list[Tensor], times: list[Tensor],
                        t: Tensor, data_prediction: bool) -> Tensor:
    """Multistep DPM-Solver-2 step from times[-1] to t using the outputs at times[-2] and times[-1]. [B,1,M,T]."""
    (m_prev, m_s), (t_prev, s) = models[-2:], times[-2:]
    lambda_prev, lambda_s, lambda_t = (schedule.marginal_lambda(u) for u in (t_prev, s, t))
    log_alpha_s, log_alpha_t = schedule.marginal_log_mean_coeff(s), schedule.marginal_log_mean_coeff(t)
    sigma_s, sigma_t = schedule.marginal_std(s), schedule.marginal_std(t)
    h = lambda_t - lambda_s
    r = (lambda_s - lambda_prev) / h
    d1 = (1.0 / r) * (m_s - m_prev)
    if data_prediction:
        coeff = torch.exp(log_alpha_t) * torch.expm1(-h)
        return (sigma_t / sigma_s) * x - coeff * m_s - 0.5 * coeff * d1
    coeff = sigma_t * torch.expm1(h)
    return torch.exp(log_alpha_t - log_alpha_s) * x - coeff * m_s - 0.5 * coeff * d1


def step_orders(steps: int, order: int = ORDER) -> list[int]:
    """Solver order of each step 1 .. steps: lower while the history fills, and at the end when steps < 10."""
    orders = []
    for step in range(1, steps + 1):
        k = min(order, step)
        if steps < LOWER_ORDER_FINAL_BELOW:
            k = min(k, steps + 1 - step)
        orders.append(k)
    return orders


def solve(diffusion: Diffusion, x: Tensor, cond: Tensor, t_start: int, speedup: int,
          data_prediction: bool, use_tqdm: bool = False) -> Tensor:
    """DPM-Solver(++) from x [B,1,M,T] at step t_start - 1 to step 0; cond [B,H,T] -> [B,1,M,T].
    data_prediction True = DPM-Solver++."""
    schedule = DiscreteVPSchedule(diffusion.betas[:t_start], clip_lambda=CLIP_LAMBDA)
    steps = solver_steps(t_start, speedup)
    times = schedule.time_steps(steps)
    orders = step_orders(steps)
    model = ContinuousTimeDenoiser(diffusion, schedule, cond, data_prediction)
    with torch.no_grad():
        hist_t, hist_m = [times[0]], [model(x, times[0])]
        # one network call per step: the first before the loop, none after the last step
        for step in progress(list(range(1, steps + 1)), use_tqdm):
            t, order = times[step], orders[step - 1]
            if order == 1:
                x = first_order_update(schedule, x, hist_t[-1], t, hist_m[-1], data_prediction)
            else:
                x = second_order_update(schedule, x, hist_m, hist_t, t, data_prediction)
            if step < steps:
                hist_t, hist_m = (hist_t + [t])[-ORDER:], (hist_m + [model(x, t)])[-ORDER:]
    return x


def sample_dpm_solver_pp(diffusion: Diffusion, x: Tensor, cond: Tensor, t_start: int, speedup: int,
                         use_tqdm: bool = False) -> Tensor:
    """Method "dpm-solver++": multistep DPM-Solver++ (data prediction). x [B,1,M,T], cond [B,H,T] -> [B,1,M,T]."""
    return solve(diffusion, x, cond, t_start, speedup, data_prediction=True, use_tqdm=use_tqdm)


def sample_dpm_solver(diffusion: Diffusion, x: Tensor, cond: Tensor, t_start: int, speedup: int,
                      use_tqdm: bool = False) -> Tensor:
    """Method "dpm-solver": multistep DPM-Solver (noise prediction). x [B,1,M,T], cond [B,H,T] -> [B,1,M,T]."""
    return solve(diffusion, x, cond, t_start, speedup, data_prediction=False, use_tqdm=use_tqdm)
