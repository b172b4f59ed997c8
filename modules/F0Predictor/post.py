"""Post-processing shared by the neural F0 predictors (crepe, rmvpe, fcpe).

Their networks give one F0 value per model frame (0 = unvoiced); these helpers bring that track to
the ``p_len`` frames of the So-VITS pipeline exactly as 4.1 does (pipeline.md §3.2, step 5).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from modules.F0Predictor.F0Predictor import fill_unvoiced


def post_process(
    f0: np.ndarray | torch.Tensor, pad_to: int, hop_length: int = 512, sampling_rate: int = 44100
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-resize a model-frame F0 track to ``pad_to`` frames, then fill unvoiced gaps.

    Args:
        f0: F0 [M] in Hz, 0 = unvoiced, any float dtype or device (computed in float32 on the CPU).
        pad_to: number of output frames (``p_len``).
        hop_length: output frame hop in samples.
        sampling_rate: audio rate in Hz.

    Returns:
        (f0 [pad_to], vuv [pad_to] float32), numpy. vuv is ``f0 > 0`` of the resized track. f0 is
        float64 from the interpolation; float32 when at most one frame is voiced (with exactly one it
        is that frame's value everywhere — unlike pm/dio/harvest, quirks.md A.6). 4.1's crepe returned
        torch tensors in those two cases (quirks.md D.49); here it is always numpy.
    """
    track = torch.as_tensor(f0).detach().to("cpu", torch.float32)
    # torch "nearest" (source index floor(i * M / pad_to)), as 4.1's repeat_expand.
    resized = F.interpolate(track[None, None], size=pad_to, mode="nearest")[0, 0].numpy()
    return fill_unvoiced(resized, hop_length, sampling_rate, classic=False)


def finish_f0(
    f0: np.ndarray | torch.Tensor, p_len: int, hop_length: int = 512, sampling_rate: int = 44100
) -> tuple[np.ndarray, np.ndarray]:
    """Finish a neural ``compute_f0_uv`` as 4.1: all-unvoiced shortcut, else :func:`post_process`.

    Args:
        f0: F0 [M] in Hz from the network, 0 = unvoiced.
        p_len: number of output frames.

    Returns:
        (f0 [p_len], uv [p_len]). When every frame is 0 both are float64 zeros (4.1 returned the
        same array twice; here they are two arrays).
    """
    if not bool(torch.as_tensor(f0).ne(0).any()):
        return np.zeros(p_len), np.zeros(p_len)
    return post_process(f0, p_len, hop_length, sampling_rate)
