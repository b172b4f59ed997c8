"""Samplers of the shallow-diffusion model, keyed by the exact `infer.method` strings.

Every sampler has one signature:

    sample(diffusion: Diffusion, x [B, 1, M, T], cond [B, H, T], t_start: int, speedup: int,
           use_tqdm: bool = False) -> [B, 1, M, T]

`x` is the normalised start (noised mel, or pure noise for full diffusion) at depth `t_start`.
Samplers draw Gaussian noise only through `diffusion.noise_like`, so callers can make runs
deterministic. Sampler modules are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Callable, Iterable, Protocol

from torch import Tensor

__all__ = ["DDPM", "Diffusion", "SAMPLERS", "Sampler", "get_sampler", "progress"]


class Diffusion(Protocol):
    """What a sampler reads from the diffusion model (`diffusion.diffusion.GaussianDiffusion`)."""

    betas: Tensor  # [N] float32 schedule
    alphas_cumprod: Tensor  # [N]
    denoise_fn: Callable[[Tensor, Tensor, Tensor], Tensor]  # (x [B,1,M,T], step [B], cond [B,H,T]) -> eps

    def noise_like(self, x: Tensor) -> Tensor: ...

    def predict_start_from_noise(self, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor: ...

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]: ...


Sampler = Callable[[Diffusion, Tensor, Tensor, int, int, bool], Tensor]

# Config string -> (module under diffusion.samplers, function).
SAMPLERS: dict[str, tuple[str, str]] = {
    "ddim": ("stride", "ddim"),
    "pndm": ("stride", "pndm"),
    "dpm-solver": ("dpm_solver", "sample_dpm_solver"),
    "dpm-solver++": ("dpm_solver", "sample_dpm_solver_pp"),
    "unipc": ("unipc", "sample"),
}
# The plain ancestral loop over every step: used when speedup <= 1 or no method is given.
DDPM = ("stride", "ddpm")


def _load(entry: tuple[str, str]) -> Sampler:
    module, function = entry
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def get_sampler(method: str | None, speedup: int) -> Sampler:
    """The sampler for `infer.method` / `infer.speedup`; speedup <= 1 or no method gives DDPM
    (the method is then not checked, as in 4.1). Raises NotImplementedError for an unknown method."""
    if method is None or speedup <= 1:
        return _load(DDPM)
    entry = SAMPLERS.get(method)
    if entry is None:
        raise NotImplementedError(
            f"{method}: unknown diffusion sampling method (infer.method); valid: "
            f"{', '.join(SAMPLERS)}, or infer.speedup 1 for the plain DDPM loop")
    return _load(entry)


def progress(steps: list[int], use_tqdm: bool, desc: str = "sample time step") -> Iterable[int]:
    """`steps`, wrapped in a tqdm bar when asked (tqdm is imported only then)."""
    if not use_tqdm:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc=desc, total=len(steps))
