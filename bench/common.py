"""Timing and report helpers shared by the benches: wall / CPU clocks, medians, machine line, tables."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch

ROOT = Path(__file__).resolve().parents[1]
# Reference clips and fixtures (not shipped with the toolkit): ../shared, or the folder in SOVITS_SHARED.
SHARED = Path(os.environ.get("SOVITS_SHARED") or ROOT.parent / "shared")
T = TypeVar("T")


def ensure_root_on_path() -> None:
    """Put the repository root first on sys.path (a bench run as a script sees bench/ first)."""
    if sys.path[0] != str(ROOT):
        sys.path.insert(0, str(ROOT))


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA work, so that a clock read after it is honest."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished, reaped child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], T], device: torch.device | str = "cpu") -> tuple[float, float, T]:
    """One call of ``fn``: (wall s, CPU s, its result)."""
    sync(device)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = fn()
    sync(device)
    return time.perf_counter() - start, cpu_seconds() - cpu_start, result


def round_robin(calls: dict[str, Callable[[], T]], repeats: int,
                device: torch.device | str = "cpu") -> dict[str, tuple[float, float, T]]:
    """One warm-up call each, then ``repeats`` timed calls taken in turns, so that load from other
    processes hits every entry alike. Returns name -> (median wall s, median CPU s, warm-up result)."""
    first = {name: call() for name, call in calls.items()}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            seconds, cpu_s, _ = timed(call, device)
            wall[name].append(seconds)
            cpu[name].append(cpu_s)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n]), first[n]) for n in calls}


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "?" where the platform has none."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine_description(device: torch.device) -> str:
    """CPU model and logical cores, torch version, threads, load average and the CUDA device if used."""
    cpu, cores = platform.processor() or platform.machine(), 0
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                cores += 1
    text = (f"cpu: {cpu}, {cores or '?'} logical cores; torch {torch.__version__}; "
            f"threads {torch.get_num_threads()}; load average {load_average()}")
    if device.type == "cuda":
        text += f"; device {torch.cuda.get_device_name(device)}"
    return text


def status_kib(field: str) -> int | None:
    """A ``Vm*`` line of /proc/self/status in KiB, or None off Linux."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
    """A Markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
