"""Options and small helpers shared by the converter (`Svc`) and the song loop."""
from __future__ import annotations

import contextlib
import math
from argparse import Namespace
from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np
import torch

from modules.f0 import F0_MAX, F0_MIN

__all__ = ["F0FilterException", "InferOptions", "MAX_TRANSPOSE", "MIN_CLIP_FRAMES", "SEED", "SvcError",
           "fill_a_to_b", "pad_array", "seeded"]

SEED = 52468  # 4.1 seeds every conversion with this
MAX_TRANSPOSE = int(12 * math.log2(F0_MAX / F0_MIN))  # 53 semitones: a larger shift leaves the model's F0 range
MIN_CLIP_FRAMES = 4  # shortest -cl; at any 4.1 hop also above the speech encoders' 400 samples at 16 kHz
# inference_main.py's option names where they differ from the field names
_CLI_NAMES = {"clip_seconds": "clip", "lg_num": "linear_gradient", "lgr_num": "linear_gradient_retain",
              "cr_threshold": "f0_filter_threshold"}


class SvcError(RuntimeError):
    """A conversion cannot run; the message says why and what to do."""


class F0FilterException(Exception):
    """`f0_filter` is on and the piece has no voiced frame (4.1 name, used by the web UI)."""


@dataclass(frozen=True)
class InferOptions:
    """Per-conversion options; names and defaults of 4.1's `Svc` arguments. SvcError for out-of-range values."""

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

    def __post_init__(self) -> None:
        if min(self.pad_seconds, self.clip_seconds, self.lg_num) < 0:
            raise SvcError("pad_seconds, clip (-cl) and linear_gradient (-lg) must be >= 0")
        if not 0 < self.lgr_num <= 1:
            raise SvcError(f"linear_gradient_retain (-lgr) must be in (0, 1], got {self.lgr_num}")
        if not -MAX_TRANSPOSE <= self.tran <= MAX_TRANSPOSE:
            raise SvcError(f"transposition (-t) must be between -{MAX_TRANSPOSE} and {MAX_TRANSPOSE} semitones "
                           f"(beyond, every pitch leaves the model's {F0_MIN:g}-{F0_MAX:g} Hz), got {self.tran:g}")
        if not 0 <= self.cr_threshold <= 1:
            raise SvcError(f"F0 filter threshold (-ft) must be between 0 and 1, got {self.cr_threshold:g}")

    @classmethod
    def from_args(cls, args: Namespace, tran: float = 0) -> "InferOptions":
        """The options of an `inference_main.py` command line (it has no f0_filter), for transposition `tran`."""
        return cls(tran=tran, **{f.name: getattr(args, _CLI_NAMES.get(f.name, f.name)) for f in fields(cls)
                                 if f.name not in ("tran", "f0_filter")})


def fill_a_to_b(a: list, b: list) -> None:
    """Pad list `a` in place to the length of `b` by repeating its first item (4.1's -t rule)."""
    while len(a) < len(b):
        a.append(a[0])


def pad_array(arr: np.ndarray, target_length: int) -> np.ndarray:
    """Centre-pad with zeros to `target_length` (left gets the smaller half); never truncates."""
    missing = target_length - arr.shape[0]
    return np.pad(arr, (missing // 2, missing - missing // 2)) if missing > 0 else arr


@contextlib.contextmanager
def seeded(device: torch.device) -> Iterator[None]:
    """Run the block on a forked global RNG (the caller's stream is untouched) seeded with `SEED`, as in 4.1."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(SEED)
        yield
