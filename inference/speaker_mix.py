"""Dynamic speaker mix (`-usm`): load and validate a `spk_mix_map` (format: see spkmix.py) and turn it into
per-frame weights."""
from __future__ import annotations

import ast
import importlib
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["SpkMixError", "build_mix_weights", "load_spk_mix_map", "read_spk_mix_file", "validate_spk_mix_map"]


class SpkMixError(ValueError):
    """The mixing map is malformed; the message names the offending entry."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_spk_mix_map(module: str = "spkmix") -> dict:
    """`spkmix.py`'s `spk_mix_map` dict (imported from sys.path); SpkMixError if it does not parse or lacks one."""
    try:
        loaded = importlib.import_module(module)
    except SyntaxError as err:
        raise SpkMixError(f"{module}.py line {err.lineno}: {err.msg} (see the format at the top of the file)")
    spk_mix_map = getattr(loaded, "spk_mix_map", None)
    if not isinstance(spk_mix_map, dict):
        raise SpkMixError(f"{module}.py must define spk_mix_map = {{speaker_id: [[t0, t1, v0, v1], ...]}}")
    return spk_mix_map


def read_spk_mix_file(path: str | os.PathLike) -> dict:
    """The `spk_mix_map` of a file in spkmix.py's format, read as data (an uploaded file is never run)."""
    name = Path(path).name
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError) as err:
        raise SpkMixError(f"{name} is not a Python file in spkmix.py's format: {err}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "spk_mix_map"
                                                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, dict):
                return value
            break
    raise SpkMixError(f"{name} must set spk_mix_map = {{speaker_id: [[t0, t1, v0, v1], ...]}} with plain numbers")


def validate_spk_mix_map(spk_mix_map: Any,
                         speakers: Mapping[str, int] | None = None) -> dict[int, list[list[float]]]:
    """Check a mixing map and return it as plain lists, sorted by id; with the model's `spk` map (name -> id)
    its ids must be exactly 0..n-1. SpkMixError names the entry ("spkmix.py: spk_mix_map[1][2]")."""
    if not isinstance(spk_mix_map, Mapping) or not spk_mix_map:
        raise SpkMixError("spkmix.py: spk_mix_map must be a non-empty dict {speaker_id: track}")
    names = {int(i): n for n, i in (speakers or {}).items()}
    out: dict[int, list[list[float]]] = {}
    for key, track in spk_mix_map.items():
        where = f"spkmix.py: spk_mix_map[{key!r}]"
        if not isinstance(key, int) or isinstance(key, bool):
            raise SpkMixError(f"{where}: keys are integer speaker ids (0, 1, ...), not {type(key).__name__}")
        if not isinstance(track, Sequence) or isinstance(track, str) or not track:
            raise SpkMixError(f"{where}: a track is a non-empty list of [t_start, t_end, v_start, v_end]")
        segments: list[list[float]] = []
        for j, seg in enumerate(track):
            here = f"{where}[{j}] = {seg!r}"
            if not isinstance(seg, Sequence) or isinstance(seg, str) or len(seg) != 4 \
                    or not all(_number(v) for v in seg):
                raise SpkMixError(f"{here}: a segment is four numbers [t_start, t_end, v_start, v_end]")
            t0, t1, v0, v1 = (float(v) for v in seg)
            if v0 < 0 or v1 < 0:
                raise SpkMixError(f"{here}: mix values must be >= 0")
            if not 0.0 <= t0 < t1 <= 1.0:
                raise SpkMixError(f"{here}: times must satisfy 0 <= t_start < t_end <= 1")
            if j == 0 and t0 != 0.0:
                raise SpkMixError(f"{here}: the first segment must start at 0")
            if j > 0 and t0 != segments[-1][1]:
                raise SpkMixError(f"{here}: starts at {t0} but the previous segment ends at "
                                  f"{segments[-1][1]}; segments must be contiguous")
            segments.append([t0, t1, v0, v1])
        if segments[-1][1] != 1.0:
            raise SpkMixError(f"{where}: the last segment must end at 1, not {segments[-1][1]}")
        out[key] = segments
    if speakers is not None:
        expected = set(range(len(names)))
        if set(out) != expected:
            listing = ", ".join(f"{i}={names[i]}" for i in sorted(names))
            gaps = (("missing", sorted(expected - set(out))), ("unknown", sorted(set(out) - expected)))
            detail = "; ".join(f"{what} ids {ids}" for what, ids in gaps if ids)
            raise SpkMixError(f"spkmix.py: spk_mix_map must give a track for every speaker id of the model "
                              f"({listing}); {detail}. Use [[0., 1., 0., 0.]] for an unused speaker.")
    return dict(sorted(out.items()))


def _ramp(v0: float, v1: float, n: int) -> torch.Tensor:
    """n values from v0 towards v1 (v1 excluded), as 4.1 builds them with arange."""
    step = (v1 - v0) / n
    if step == 0.0:
        return torch.zeros(n) + v0
    values = torch.arange(v0, v1, step)
    if len(values) < n:  # float rounding can make arange one value short; 4.1 reflect-pads
        values = F.pad(values[None], [0, n - len(values)], mode="reflect")[0]
    return values[:n]


def build_mix_weights(spk_mix_map: Mapping[int, Sequence[Sequence[float]]], n_frames: int) -> torch.Tensor:
    """Per-frame weights float32 [n_speakers, n_frames] of a validated map, every column summing to 1;
    SpkMixError when a segment covers no frame at this song length."""
    n_spk = len(spk_mix_map)
    weights = torch.zeros(n_spk, n_frames)
    for i in range(n_spk):
        for j, (t0, t1, v0, v1) in enumerate(spk_mix_map[i]):
            begin, end = int(n_frames * t0), int(n_frames * t1)
            if end - begin <= 0:
                raise SpkMixError(f"spkmix.py: spk_mix_map[{i}][{j}] = {[t0, t1, v0, v1]}: covers no frame of "
                                  f"this {n_frames}-frame song; make the segment longer")
            weights[i, begin:end] = _ramp(v0, v1, end - begin)
    sums = weights.sum(dim=0)
    empty = sums == 0
    weights[:, empty] = 1.0 / n_spk
    sums[empty] = 1.0
    return weights / sums
