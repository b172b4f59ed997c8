"""F0 math and frame alignment shared by the networks, preprocessing and inference: coarse pitch
quantisation, log-F0 normalisation, gap filling and unit stretching, with 4.1's exact numbers."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Coarse-pitch quantisation: 256 bins over the mel-pitch range 50..1100 Hz.
F0_BIN = 256
F0_MIN = 50.0
F0_MAX = 1100.0
# numpy's log (not math.log) so the constants agree with 4.1 to the last bit.
F0_MEL_MIN = float(1127 * np.log(1 + F0_MIN / 700))
F0_MEL_MAX = float(1127 * np.log(1 + F0_MAX / 700))

# Mean denominator used by normalize_f0 for rows without any voiced frame (4.1 value, not 1).
_NO_VOICED_DENOMINATOR = 9999


def f0_to_coarse(f0: torch.Tensor) -> torch.Tensor:
    """Coarse pitch index (int64, same shape) fed to ``enc_p.f0_emb`` of F0 in Hz (0 = unvoiced).

    Below 50 Hz maps to 1; bins round half to even. Above about 1103.1 Hz maps to 0, not 255: 4.1 zeroes
    indices >= 256 instead of clipping them, and trained models have seen exactly that.
    """
    f0_mel = 1127 * (1 + f0 / 700).log()
    # The affine map is applied in the tensor's dtype with the scalars rounded to it, as 4.1 does.
    scale = (F0_BIN - 2) / (F0_MEL_MAX - F0_MEL_MIN)
    offset = F0_MEL_MIN * scale - 1.0
    f0_mel = torch.where(f0_mel > 0, f0_mel * scale - offset, f0_mel)
    coarse = torch.round(f0_mel).long()
    coarse = torch.where(coarse < 1, torch.ones_like(coarse), coarse)
    return torch.where(coarse >= F0_BIN, torch.zeros_like(coarse), coarse)


def normalize_f0(f0: torch.Tensor, x_mask: torch.Tensor, uv: torch.Tensor,
                 random_scale: bool = True) -> torch.Tensor:
    """``(f0 - mean) * factor * x_mask`` [B, 1, T]: log-F0 ``2595 * log10(1 + f0 / 700) / 500`` [B, 1, T]
    centred on each item's voiced mean for the F0 decoder.

    The mean is over frames with uv [B, T] = 1 across the whole padded length (not x_mask); a row without
    voiced frames divides by 9999. ``random_scale`` draws each factor from U(0.8, 1.2) as one [B, 1] CPU
    tensor, like 4.1, so seeded runs draw the same numbers. Raises ValueError on NaN (4.1 ended the run
    with a success status instead).
    """
    voiced_count = torch.sum(uv, dim=1, keepdim=True)
    voiced_count[voiced_count == 0] = _NO_VOICED_DENOMINATOR
    means = torch.sum(f0[:, 0, :] * uv, dim=1, keepdim=True) / voiced_count
    if random_scale:
        factor = torch.empty(f0.shape[0], 1).uniform_(0.8, 1.2).to(f0)
    else:
        factor = torch.ones(f0.shape[0], 1, dtype=f0.dtype, device=f0.device)
    f0_norm = (f0 - means.unsqueeze(-1)) * factor.unsqueeze(-1)
    if torch.isnan(f0_norm).any():
        bad = torch.isnan(f0_norm).flatten(1).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"normalize_f0: NaN in the normalised log-F0 of batch items {bad}")
    return f0_norm * x_mask


def interpolate_f0(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill the unvoiced (<= 0) gaps of an F0 track (any shape, flattened, not modified) as 4.1's
    ``utils.interpolate_f0``; returns (filled F0 [N] in the input dtype, voicing [N] float32).

    Kept from 4.1: the m-th frame of a gap of `len` between voiced a and b gets
    ``f0[a] + (f0[b] - f0[a]) * m / len`` (reaching f0[b] one frame early); leading gaps take the first
    voiced value; a gap whose next voiced frame is the last one (or none) takes the last voiced value up
    to the end, overwriting that last frame.
    """
    data = np.array(f0).reshape(-1)
    vuv = (data > 0.0).astype(np.float32)
    out = data.copy()
    n = out.size
    last = 0.0
    i = 0
    while i < n:
        if not out[i] <= 0.0:  # NaN counts as voiced here, as in 4.1
            last = out[i]
            i += 1
            continue
        later = np.flatnonzero(data[i + 1:] > 0.0)
        j = i + 1 + int(later[0]) if later.size else n - 1
        if j >= n - 1:
            out[i:] = last
            break
        if last > 0.0:
            step = (out[j] - out[i - 1]) / float(j - i)
            out[i:j] = out[i - 1] + step * np.arange(1, j - i + 1, dtype=out.dtype)
        else:
            out[i:j] = out[j]
        i = j
    return out, vuv


def repeat_expand_2d(content: torch.Tensor, target_len: int, mode: str = "left") -> torch.Tensor:
    """Stretch features [C, src] to [C, target_len].

    ``mode`` is ``"left"`` (4.0's: the source column advances by at most one per output frame, when the
    output index reaches the float32 boundary ``(k + 1) * target_len / src``, so a shorter target keeps
    the first columns; float32 result like 4.1's) or an ``F.interpolate`` mode (input dtype kept).
    """
    if mode != "left":
        return F.interpolate(content[None], size=target_len, mode=mode)[0]
    src_len = content.shape[-1]
    # 4.1 computes the boundaries as an integer tensor divided by an int: float32 true division.
    bounds = (torch.arange(src_len + 1) * target_len / src_len).tolist()
    index = []
    pos = 0
    for i in range(target_len):
        if i >= bounds[pos + 1]:
            pos += 1
        index.append(pos)
    index_t = torch.tensor(index, dtype=torch.long, device=content.device)
    return content[:, index_t].to(torch.float32)
