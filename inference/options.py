"""Options and small helpers shared by the converter (`Svc`) and the song loop."""
from __future__ import annotations

import contextlib
from argparse import Namespace
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

    @classmethod
    def from_args(cls, args: Namespace, tran: float = 0) -> "InferOptions":
        """The options of an `inference_main.py` command line, for an input transposed by `tran`."""
        return cls(tran=tran, slice_db=args.slice_db, cluster_infer_ratio=args.cluster_infer_ratio,
                   auto_predict_f0=args.auto_predict_f0, noice_scale=args.noice_scale, pad_seconds=args.pad_seconds,
                   clip_seconds=args.clip, lg_num=args.linear_gradient, lgr_num=args.linear_gradient_retain,
                   f0_predictor=args.f0_predictor, enhancer_adaptive_key=args.enhancer_adaptive_key,
                   cr_threshold=args.f0_filter_threshold, k_step=args.k_step, use_spk_mix=args.use_spk_mix,
                   second_encoding=args.second_encoding,
                   loudness_envelope_adjustment=args.loudness_envelope_adjustment)


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
    """Run the block on a forked global RNG seeded with `SEED` (as 4.1 seeds each conversion): vocoder
    and diffusion noise repeat exactly, and the caller's RNG stream is untouched."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(SEED)
        yield
