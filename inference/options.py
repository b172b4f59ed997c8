"""Options and small helpers shared by the converter (`Svc`) and the song loop."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

__all__ = ["F0FilterException", "InferOptions", "SEED", "SvcError", "fill_a_to_b", "pad_array", "seeded"]

SEED = 52468  # 4.1 seeds every conversion with this


class SvcError(RuntimeError):
    """A conversion cannot run; the message says why and what to do."""


class F0FilterException(Exception):
    """`f0_filter` is on and the piece has no voiced frame (4.1 name, used by the web UI)."""


@dataclass(frozen=True)
class InferOptions:
    """Per-conversion options; names and defaults of 4.1's `inference_main.py` / `Svc` arguments."""

    tran: float = 0  # semitones
    cluster_infer_ratio: float = 0.0
    auto_predict_f0: bool = False
    noice_scale: float = 0.4
    f0_filter: bool = False
    f0_predictor: str = "pm"
    enhancer_adaptive_key: float = 0
    cr_threshold: float = 0.05  # -ft / --f0_filter_threshold
    k_step: int = 100
    second_encoding: bool = False
    loudness_envelope_adjustment: float = 1.0
    slice_db: float = -40
    pad_seconds: float = 0.5
    clip_seconds: float = 0.0
    lg_num: float = 0.0  # -lg, seconds
    lgr_num: float = 0.75  # -lgr
    use_spk_mix: bool = False


def fill_a_to_b(a: list, b: list) -> None:
    """Pad list `a` in place to the length of `b` by repeating its first item (4.1's -t rule)."""
    while len(a) < len(b):
        a.append(a[0])


def pad_array(arr: np.ndarray, target_length: int) -> np.ndarray:
    """Centre-pad with zeros to `target_length` (left gets the smaller half); never truncates."""
    missing = target_length - arr.shape[0]
    if missing <= 0:
        return arr
    return np.pad(arr, (missing // 2, missing - missing // 2))


@contextlib.contextmanager
def seeded(device: torch.device) -> Iterator[None]:
    """Run the block on a private copy of the global RNG seeded with `SEED`.

    The vocoders' source noise and the diffusion samplers draw from the global RNG, which 4.1 had
    just seeded inside the So-VITS call; forking it makes every conversion repeat exactly without
    touching the caller's RNG stream.
    """
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(SEED)
        yield
