"""Gaussian diffusion over normalised mels (DDPM): noise-prediction loss for training; sampling from a vocoder
mel with k steps of noise added (shallow) or from pure noise (full), with a sampler of `diffusion.samplers`.
Every Gaussian draw goes through `noise_like`, so a `noise_fn` given to `forward` controls them all.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.samplers import get_sampler
from diffusion.samplers.schedule import extract, linear_schedule

__all__ = ["DiffusionStepError", "GaussianDiffusion", "NoiseFn", "effective_k_step_max"]

# A function returning Gaussian noise with the shape, dtype and device of its argument.
NoiseFn = Callable[[Tensor], Tensor]


class DiffusionStepError(ValueError):
    """A diffusion depth the model cannot serve; the leading text is 4.1's."""


def effective_k_step_max(k_step_max: int | None, timesteps: int) -> int:
    """`model.k_step_max` -> steps the model is trained for; None, <= 0 or >= timesteps mean all."""
    return int(k_step_max if k_step_max is not None and 0 < k_step_max < timesteps else timesteps)


class GaussianDiffusion(nn.Module):
    """DDPM around a denoiser eps(x [B, 1, M, T], t [B], cond [B, H, T]) -> [B, 1, M, T] over M = out_dims bins;
    k_step: deepest step the model is trained for (<= 0 or >= timesteps: all); max_beta: last beta of the
    linear schedule; spec_min / spec_max: log-mel range mapped to [-1, 1]."""

    def __init__(self, denoise_fn: nn.Module, out_dims: int = 128, timesteps: int = 1000, k_step: int = 1000,
                 max_beta: float = 0.02, spec_min: float = -12, spec_max: float = 2) -> None:
        super().__init__()
        self.denoise_fn = denoise_fn
        self.out_dims = out_dims
        self.num_timesteps = int(timesteps)
        self.k_step_max = effective_k_step_max(k_step, timesteps)
        self.noise_fn: NoiseFn | None = None
        # Buffers in 4.1's order (its state dicts list them so).
        for name, value in linear_schedule(self.num_timesteps, max_beta).items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32))
        self.register_buffer("spec_min", torch.tensor([float(spec_min)])[None, None, :out_dims])
        self.register_buffer("spec_max", torch.tensor([float(spec_max)])[None, None, :out_dims])

    def noise_like(self, x: Tensor) -> Tensor:
        """Gaussian noise shaped like x, from the active `noise_fn` (default torch.randn_like)."""
        return torch.randn_like(x) if self.noise_fn is None else self.noise_fn(x)

    def norm_spec(self, x: Tensor) -> Tensor:
        """Log-mel [B, T, M] -> [-1, 1] range (no clamping)."""
        return (x - self.spec_min) / (self.spec_max - self.spec_min) * 2 - 1

    def denorm_spec(self, x: Tensor) -> Tensor:
        """Inverse of `norm_spec` (no clamping)."""
        return (x + 1) / 2 * (self.spec_max - self.spec_min) + self.spec_min

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for x_start [B, 1, M, T], t [B] or [1] long."""
        if noise is None:
            noise = self.noise_like(x_start)
        return (extract(self.sqrt_alphas_cumprod, t, x_start.dim()) * x_start
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.dim()) * noise)

    def predict_start_from_noise(self, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_0 estimate sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps; x_t [B, 1, M, T], t [B]."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.dim()) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.dim()) * noise)

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(x_{t-1} | x_t, x_0); shapes of x_t and [B, 1, 1, 1]."""
        mean = (extract(self.posterior_mean_coef1, t, x_t.dim()) * x_start
                + extract(self.posterior_mean_coef2, t, x_t.dim()) * x_t)
        return mean, extract(self.posterior_log_variance_clipped, t, x_t.dim())

    def forward(self, condition: Tensor, gt_spec: Tensor | None = None, infer: bool = True,
                infer_speedup: int = 10, method: str | None = "dpm-solver", k_step: int = 300,
                use_tqdm: bool = True, *, t: Tensor | None = None, noise_fn: NoiseFn | None = None) -> Tensor:
        """Training loss (infer=False) or sampled mel [B, T, M] for a condition [B, T, H]. gt_spec [B, T, M]:
        the training target, or the shallow start (None: full diffusion); infer_speedup / method: sampler stride
        and `infer.method` (stride <= 1: plain DDPM); k_step: shallow depth (1 .. k_step_max); t: training
        steps [B] instead of random ones; noise_fn: every Gaussian draw."""
        previous = self.noise_fn
        if noise_fn is not None:
            self.noise_fn = noise_fn
        try:
            if not infer:
                return self._loss(condition, gt_spec, t)
            return self._sample(condition, gt_spec, infer_speedup, method, k_step, use_tqdm)
        finally:
            self.noise_fn = previous

    def _loss(self, condition: Tensor, gt_spec: Tensor | None, t: Tensor | None) -> Tensor:
        if gt_spec is None:
            raise ValueError("training the diffusion model needs gt_spec (the target mel)")
        x_start = self.norm_spec(gt_spec).transpose(1, 2).unsqueeze(1)
        if t is None:
            t = torch.randint(0, self.k_step_max, (condition.shape[0],), device=condition.device).long()
        noise = self.noise_like(x_start)
        return F.mse_loss(noise, self.denoise_fn(self.q_sample(x_start, t, noise), t, condition.transpose(1, 2)))

    def check_k_step(self, k_step: int, shallow: bool) -> None:
        """Raise DiffusionStepError when sampling with this depth is impossible (4.1's texts + numbers)."""
        if shallow and k_step > self.k_step_max:
            raise DiffusionStepError(
                "The shallow diffusion k_step is greater than the maximum diffusion k_step(k_step_max)! "
                f"(k_step {k_step} > k_step_max {self.k_step_max}; lower -ks / k_step to at most "
                f"{self.k_step_max})")
        if shallow and k_step < 1:
            raise DiffusionStepError(f"shallow diffusion needs k_step >= 1, got {k_step}")
        if not shallow and self.k_step_max != self.num_timesteps:
            raise DiffusionStepError(
                "This model can only be used for shallow diffusion and can not infer alone! "
                f"(k_step_max {self.k_step_max} < timesteps {self.num_timesteps}; give it a mel to "
                "start from, i.e. use shallow diffusion)")

    def _sample(self, condition: Tensor, gt_spec: Tensor | None, infer_speedup: int, method: str | None,
                k_step: int, use_tqdm: bool) -> Tensor:
        cond = condition.transpose(1, 2)
        batch, frames = cond.shape[0], cond.shape[2]
        self.check_k_step(int(k_step), shallow=gt_spec is not None)
        if gt_spec is None:
            t_start = self.k_step_max
            # Full diffusion starts from pure noise at the deepest step.
            x = self.noise_like(cond.new_empty((batch, 1, self.out_dims, frames)))
        else:
            t_start = int(k_step)
            x_start = self.norm_spec(gt_spec).transpose(1, 2).unsqueeze(1)
            steps = torch.full((batch,), t_start - 1, dtype=torch.long, device=cond.device)
            x = self.q_sample(x_start, steps)
        # Looked up after the start is drawn, as in 4.1 (the RNG stream is the same on an error).
        sampler = get_sampler(method, infer_speedup)
        x = sampler(self, x, cond, t_start, int(infer_speedup), use_tqdm)
        return self.denorm_spec(x.squeeze(1).transpose(1, 2))
