"""Small pieces every training loop shares: the mixed-precision rule and context, the out-of-memory
message and the rule for the extra checkpoint written when a run stops or ends."""
from __future__ import annotations

import random
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import torch

from core.runtime import bf16_problem

__all__ = ["autocast", "mixed_precision", "needs_final_save", "out_of_memory_message", "rng_state",
           "set_rng_state"]


def mixed_precision(name: str, device: torch.device, field: str,
                    warn: Callable[[str], None]) -> torch.dtype | None:
    """The autocast dtype a trainer uses for precision `name` ("fp32", "fp16" or "bf16", from config
    field `field`) on `device`; None = plain fp32. A GPU trains as asked (bf16 on one older than Ampere
    with a warning: it only emulates bf16). fp16 is never used on the CPU, and bf16 only on a CPU with
    native bf16; elsewhere the CPU trains in fp32, with a warning, because its bf16 reference kernels run
    many times slower than fp32."""
    if name not in ("fp16", "bf16"):
        return None
    if device.type == "cuda":
        if name == "bf16" and (problem := bf16_problem(device)):
            warn(f'{field} bf16: {problem}; training in bf16 as asked ("fp16" is likely faster here)')
        return torch.bfloat16 if name == "bf16" else torch.float16
    if name == "fp16":
        warn(f"{field} fp16 is not used on the {device.type.upper()}; training in fp32 (bf16 works on CPUs "
             "with native bf16)")
        return None
    problem = bf16_problem(device)
    if problem:
        warn(f"{field} bf16 is not used here: {problem}; training in fp32")
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None, enabled: bool = True) -> ContextManager[Any]:
    """`torch.autocast` on `device`'s type in `dtype`; a no-op context when `dtype` is None (fp32)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def out_of_memory_message(device: torch.device | str, step: int, advice: str) -> str:
    """"Out of memory on <device> at step <step>. <advice>" (advice: which settings to lower)."""
    return f"Out of memory on {device} at step {step}. {advice}"


def needs_final_save(last_done: int, first_of_run: int, last_saved: int | None) -> bool:
    """Whether step `last_done` was trained by this run (>= `first_of_run`) and is not saved yet,
    i.e. a stop request or the end of training should write one more checkpoint."""
    return last_done >= first_of_run and last_done != last_saved


def rng_state() -> dict[str, Any]:
    """The random-number states training draws from: torch (CPU, CUDA) and Python's `random` (crops)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    # Only a process that uses CUDA has CUDA states to keep: asking otherwise would start CUDA on the first GPU
    # in a CPU run (its memory taken, or an error where that GPU is busy in exclusive mode).
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`; CUDA states only when the GPU count is the same as at the save."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if len(state.get("cuda", ())) == torch.cuda.device_count() > 0:
        torch.cuda.set_rng_state_all(state["cuda"])
