"""Band-limited resampling with a Hann-windowed sinc kernel (polyphase, integer rate ratio).

Same kernel and strided convolution as torchaudio's ``sinc_interp_hann`` resampling, which 4.1 uses for
inference pieces (6 zero crossings) and the RMVPE/FCPE front ends (128), so the numbers agree with
torchaudio to float32 rounding without depending on it. With the rates reduced by their gcd to
``orig`` / ``new`` and cut-off ``base = min(orig, new) * rolloff``, output phase ``j`` weighs input tap
``i`` by ``sinc(pi t) cos(pi t / 2w)^2 base / orig``, ``t = (i / orig - j / new) * base`` clipped to
``[-w, w]`` (w = lowpass_filter_width).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["resample", "sinc_resample_kernel"]

# (orig, new, width, rolloff, dtype, device) -> (kernel, width). Kernels for 128 zero crossings are
# ~180k taps; building them once per process matters for per-file preprocessing.
_KERNEL_CACHE: dict[tuple, tuple[torch.Tensor, int]] = {}


def sinc_resample_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99,
                         dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
                         ) -> tuple[torch.Tensor, int]:
    """Polyphase kernel for integer rates ``orig_freq -> new_freq`` in Hz, computed in float64 and cast.

    Args:
        lowpass_filter_width: zero crossings of the sinc on each side (sharpness of the filter).
        rolloff: cut-off as a fraction of the lower Nyquist rate.
    Returns:
        (kernel [new, 1, 2 * width + orig] with rates reduced by their gcd, width).
    """
    if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError(f"resampling needs positive integer rates, got {orig_freq} -> {new_freq}")
    if lowpass_filter_width <= 0:
        raise ValueError(f"lowpass_filter_width must be positive, got {lowpass_filter_width}")
    device = torch.device(device)
    key = (int(orig_freq), int(new_freq), int(lowpass_filter_width), float(rolloff), dtype, device)
    cached = _KERNEL_CACHE.get(key)
    if cached is not None:
        return cached
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    # The phase offsets are rounded to float32 before meeting the float64 taps, as in torchaudio
    # (an integer arange divided in the default dtype); this keeps the output bit-identical.
    phases = (torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new).double()
    t = ((phases + taps) * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    # sin(t)/t with the removable singularity at 0 filled in.
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = (sinc * (window * (base / orig))).to(dtype=dtype, device=device)
    _KERNEL_CACHE[key] = (kernel, width)
    return kernel, width


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """Resample float audio [..., N] from ``orig_freq`` to ``new_freq`` Hz in its own dtype and device.

    The signal is zero-padded by the kernel width, convolved with stride ``orig`` and the ``new`` phases
    interleaved. Returns [..., ceil(new_freq * N / orig_freq)]; the input itself when the rates are equal.
    """
    if orig_freq == new_freq:
        return waveform
    kernel, width = sinc_resample_kernel(
        orig_freq, new_freq, lowpass_filter_width, rolloff, waveform.dtype, waveform.device
    )
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + orig))
    # [B, new, frames] -> interleave the phases: output sample frame * new + phase.
    out = F.conv1d(padded[:, None], kernel, stride=orig).transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * length / orig)
    return out[..., :target].reshape(*shape[:-1], -1)
