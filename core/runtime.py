"""Process-wide speed and memory tuning for inference, and the one switch that turns it all off.

`SOVITS_PLAIN=1` in the environment disables every optimisation below (the allocator settings, the
heap trimming between pieces and the decoder's in-place fast path with its CPU convolution forms,
`modules/polyphase.py`) and preprocessing's two clips at a time (`prep/features.py`), for benchmark
baselines and for debugging; the results are the same either way (within float rounding, at most 1e-4).

glibc's allocator hands large buffers back to the kernel when they are freed (`mmap` above a
threshold, heap trimming above another) and faults them in, zero-filled, on the next call: for the
decoder's 10-30 MB buffers that was 15-25 % of every synthesizer call in system time. `tune_allocator`
keeps such buffers in the heap for reuse, and turns oneDNN's cache of built convolutions off (it grew by
hundreds of MB with every new slice length); `release_memory` returns the free part of the heap between
pieces, so a long song's peak memory is that of its longest piece, not of what the libraries kept.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

import torch

__all__ = ["bf16_problem", "fast_paths", "keep_kernel_cache", "plain", "release_memory", "tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit: buffers up to 32 MiB come from the heap
TRIM_THRESHOLD = 1 << 30  # never trim on free(); release_memory trims once per piece instead


def plain() -> bool:
    """True when SOVITS_PLAIN asks for the unoptimised path."""
    return os.environ.get("SOVITS_PLAIN", "") not in ("", "0")


def fast_paths() -> bool:
    """Whether in-place element-wise work may be used: not plain and no autograd recording."""
    return not plain() and not torch.is_grad_enabled()


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has mallopt and malloc_trim), else None (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


@cache
def _tuned() -> bool:
    # oneDNN keeps every convolution it builds (up to 1024), with its JIT code and buffers, keyed by the exact
    # shapes: each new slice length adds a call's worth (hundreds of MB for a long slice) that a song of many
    # slices never reuses. Off unless the user set it; read by oneDNN when it builds its first convolution.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) \
        and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def keep_kernel_cache() -> None:
    """Keep oneDNN's cache of built convolutions (its default size) in a process that converts chunks of one
    length again and again (the VST server): rebuilding them costs ~45 % more CPU per chunk, and the cache
    stops growing once it holds the one shape. Call before the first convolution; the user's setting wins."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024")


def tune_allocator() -> bool:
    """Keep large buffers in the heap (set once per process; a no-op without glibc or with SOVITS_PLAIN).
    Returns whether the settings are in force."""
    return not plain() and _tuned()


def release_memory() -> None:
    """Give the free part of the heap back to the system (glibc `malloc_trim`; after each converted piece)."""
    libc = _glibc()
    if libc is not None and not plain():
        libc.malloc_trim(0)


def bf16_problem(device: torch.device) -> str | None:
    """Why bf16 would not pay on `device` (None: it may be used): CPUs need native bf16 (AVX512-BF16 or AMX),
    without which PyTorch falls back to reference kernels ~25-50x slower than fp32; GPUs need compute capability
    8.0+ (Ampere)."""
    if device.type == "cuda":  # torch.cuda.is_bf16_supported() also counts the slow emulation of older GPUs
        props = torch.cuda.get_device_properties(device)
        return None if torch.version.hip or props.major >= 8 else \
            f"{props.name} (compute capability {props.major}.{props.minor}) has no native bf16 (8.0+ has)"
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return None
    return (f"this {device.type.upper()} has no native bf16 (AVX512-BF16 or AMX; PyTorch reports "
            f"{torch.backends.cpu.get_cpu_capability()}), where bf16 runs many times slower than fp32; leave bf16 off")
