"""Samplers of the shallow-diffusion model, keyed by the exact `infer.method` strings.

Every sampler is one function with the same interface (`sample` in its module; `dpm_solver` has
`sample_dpm_solver` and `sample_dpm_solver_pp`, one per config string):

    sample(diffusion: GaussianDiffusion, x: Tensor [B, 1, M, T], cond: Tensor [B, H, T],
           t_start: int, speedup: int, use_tqdm: bool = False) -> Tensor [B, 1, M, T]

`x` is the normalised start (noised mel for shallow diffusion, pure noise for full diffusion) at depth
`t_start` (k_step, or k_step_max for full diffusion). A sampler calls the network only as
`diffusion.denoise_fn(x, t, cond)` with t a [B] tensor (long or float), reads the schedule buffers
(`betas`, `alphas_cumprod`, ...) from `diffusion`, and draws any Gaussian noise with
`diffusion.noise_like(x)` so that callers can make runs deterministic.

Modules are imported on first use: a run that never asks for UniPC does not load it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

from torch import Tensor

if TYPE_CHECKING:
    from diffusion.diffusion import GaussianDiffusion

__all__ = ["DDPM", "SAMPLERS", "Sampler", "get_sampler", "progress"]

Sampler = Callable[["GaussianDiffusion", Tensor, Tensor, int, int, bool], Tensor]

# Config string -> (module under diffusion.samplers, function with the interface above).
# dpm_solver serves two config strings (noise- and data-prediction variants), one function each.
SAMPLERS: dict[str, tuple[str, str]] = {
    "ddim": ("ddim", "sample"),
    "pndm": ("pndm", "sample"),
    "dpm-solver": ("dpm_solver", "sample_dpm_solver"),
    "dpm-solver++": ("dpm_solver", "sample_dpm_solver_pp"),
    "unipc": ("unipc", "sample"),
}
# The plain ancestral loop over every step: used when speedup <= 1 or no method is given.
DDPM = ("ddpm", "sample")


def _load(entry: tuple[str, str]) -> Sampler:
    module, function = entry
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def get_sampler(method: str | None, speedup: int) -> Sampler:
    """The sampling function for `infer.method` / `infer.speedup`.

    speedup <= 1 or method None -> the plain DDPM loop (`method` is then not checked, as in 4.1).
    Raises NotImplementedError naming the method and the valid names for anything else unknown.
    """
    if method is None or speedup <= 1:
        return _load(DDPM)
    entry = SAMPLERS.get(method)
    if entry is None:
        raise NotImplementedError(
            f"{method}: unknown diffusion sampling method (infer.method); valid: "
            f"{', '.join(SAMPLERS)}, or infer.speedup 1 for the plain DDPM loop")
    return _load(entry)


def progress(steps: list[int], use_tqdm: bool, desc: str) -> list[int]:
    """`steps`, wrapped in a tqdm bar when asked (tqdm is imported only then)."""
    if not use_tqdm:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc=desc, total=len(steps))
