"""The one device rule: "auto" (or nothing) means the first CUDA GPU when there is one, else the CPU."""
from __future__ import annotations

import torch

__all__ = ["device_problem", "missing_device", "resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None / "auto" -> `cuda` when available, else `cpu`; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def missing_device(device: torch.device) -> str | None:
    """Why a CUDA `device` cannot be used here (None: it can, or it is no CUDA device): no CUDA at all, or an
    index beyond the GPUs this process sees (CUDA_VISIBLE_DEVICES renumbers them from 0)."""
    if device.type != "cuda":
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.index or 0) < count:
        return None
    seen = f"this process sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA GPU is available"
    return f"device {device} cannot be used: {seen}"


def device_problem(name: str | None) -> str | None:
    """Why the `--device` value `name` cannot be used (None: it can; None and "auto" pick one): not a torch
    device name, or a CUDA device this process does not have."""
    if name is None or str(name) == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"unknown device {name!r}; use cpu, cuda or cuda:N"
    return missing_device(device)
