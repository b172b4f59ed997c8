"""UniPC ("unipc"): unified predictor-corrector, B(h) = bh2 variant, multistep, order 2, data prediction.

From Zhao et al. 2023, "UniPC" (NeurIPS), section 3 and algorithms 1-2. With m = x0_hat,
h = lambda_t - lambda_s and hh = -h:

    x_base = (sigma_t / sigma_s) x_s - alpha_t (e^hh - 1) m_s
    UniP:    x_t   = x_base - alpha_t B(h) sum_k rho_p[k] D_k
    UniC:    x_t^c = x_base - alpha_t B(h) (sum_k rho_c[k] D_k + rho_c[-1] (m(x_t, t) - m_s))

with D_k = (m_{prev k} - m_s) / r_k, r_k = (lambda_{prev k} - lambda_s) / h, B(h) = e^hh - 1, and
rho solving R rho = g (order 2 uses rho_p = 1/2). The corrector's evaluation at the predicted x_t is
reused as the history entry, so a step costs one network call. 4.1's configuration: schedule from
betas[:t_start], t_start // speedup steps uniform in t, first and last step first-order, no
corrector after the last step.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusion.samplers import Diffusion, progress
from diffusion.samplers.schedule import ContinuousTimeDenoiser, DiscreteVPSchedule, solver_steps

ORDER = 2


def unipc_update(schedule: DiscreteVPSchedule, model: ContinuousTimeDenoiser, x: Tensor, models: list[Tensor],
                 times: list[Tensor], t: Tensor, order: int, use_corrector: bool) -> tuple[Tensor, Tensor | None]:
    """One UniPC-bh2 step (data prediction) from times[-1] to t with ``order`` history points.

    x: [B,1,M,T] at times[-1]; models: x0_hat at ``times`` (the last ``order`` are used).
    Returns (x_t [B,1,M,T], x0_hat at the predicted x_t, or None without corrector).
    """
    s, m_s = times[-1], models[-1]
    lambda_s, lambda_t = schedule.marginal_lambda(s), schedule.marginal_lambda(t)
    sigma_s, sigma_t = schedule.marginal_std(s), schedule.marginal_std(t)
    alpha_t = torch.exp(schedule.marginal_log_mean_coeff(t))
    h = lambda_t - lambda_s

    ratios, diffs = [], []
    for k in range(1, order):
        r_k = (schedule.marginal_lambda(times[-(k + 1)]) - lambda_s) / h
        ratios.append(r_k)
        diffs.append((models[-(k + 1)] - m_s) / r_k)
    ratios.append(torch.ones_like(h))

    hh = -h
    h_phi_1 = torch.expm1(hh)
    b_h = torch.expm1(hh)  # bh2; bh1 would be hh
    # g_i = hh * phi_{i+1}(hh) * i! / B(h) for i = 1 .. order, phi_{k+1}(z) = (phi_k(z) - 1/k!) / z
    h_phi_k = h_phi_1 / hh - 1.0
    g = []
    for i in range(1, order + 1):
        g.append(h_phi_k * math.factorial(i) / b_h)
        h_phi_k = h_phi_k / hh - 1.0 / math.factorial(i + 1)
    r_vec = torch.stack(ratios)
    r_matrix = torch.stack([r_vec ** (i - 1) for i in range(1, order + 1)])
    g_vec = torch.stack(g)

    x_base = sigma_t / sigma_s * x - alpha_t * h_phi_1 * m_s
    x_t = x_base
    if diffs:
        rho_p = torch.full((1,), 0.5, dtype=x.dtype) if order == 2 else \
            torch.linalg.solve(r_matrix[:-1, :-1], g_vec[:-1])
        pred = sum(rho_p[k] * diffs[k] for k in range(len(diffs)))
        x_t = x_base - alpha_t * b_h * pred
    if not use_corrector:
        return x_t, None

    m_t = model(x_t, t)
    rho_c = torch.full((1,), 0.5, dtype=x.dtype) if order == 1 else torch.linalg.solve(r_matrix, g_vec)
    corr = rho_c[-1] * (m_t - m_s)
    if diffs:
        corr = sum(rho_c[k] * diffs[k] for k in range(len(diffs))) + corr
    return x_base - alpha_t * b_h * corr, m_t


def sample(diffusion: Diffusion, x: Tensor, cond: Tensor, t_start: int, speedup: int,
           use_tqdm: bool = False) -> Tensor:
    """UniPC-bh2 of order 2 from x [B,1,M,T] at step t_start - 1 to step 0; cond [B,H,T] -> [B,1,M,T]."""
    schedule = DiscreteVPSchedule(diffusion.betas[:t_start])  # no log-SNR clipping in the UniPC reference
    steps = solver_steps(t_start, speedup)
    times = schedule.time_steps(steps)
    model = ContinuousTimeDenoiser(diffusion, schedule, cond, data_prediction=True)
    with torch.no_grad():
        hist_t, hist_m = [times[0]], [model(x, times[0])]
        # one network call per step: the first before the loop, the corrector's in between, none at the end
        for step in progress(list(range(1, steps + 1)), use_tqdm):
            t = times[step]
            order = min(ORDER, step, steps + 1 - step)
            x, m_t = unipc_update(schedule, model, x, hist_m, hist_t, t, order, use_corrector=step < steps)
            if step < steps:
                hist_t, hist_m = (hist_t + [t])[-ORDER:], (hist_m + [m_t])[-ORDER:]
    return x
