"""Static voice mixing (`model_mix.py`, the web UI's tools tab): sum_i w_i * model_i per tensor."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from core.atomic import write_atomic
from core.checkpoint import read_checkpoint
from export.release import ModelFileError, alias_key
from generator import check_fit, state_differences

__all__ = ["MIX_MODES", "mix_model", "mix_states", "mix_weights"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
MIX_MODES = {0: "convex", 1: "linear"}


def _mode_name(mode: int | str) -> str:
    name = MIX_MODES.get(mode, "") if isinstance(mode, int) else str(mode).lower()
    if name not in MIX_MODES.values():
        raise ModelFileError(f"mix mode {mode!r} is not one of 0 / convex, 1 / linear")
    return name


def mix_weights(mix_rate: Sequence[float], mode: int | str = 0) -> torch.Tensor:
    """Weights [N] float32 as 4.1's web UI computes them: mode 0 / "convex" softmax(percent / 100) (not
    percent / Σpercent: 50/30/20 gives 0.391/0.320/0.289), mode 1 / "linear" percent / 100."""
    name = _mode_name(mode)
    rates = torch.tensor([float(r) for r in mix_rate], dtype=torch.float32) / 100
    if rates.numel() == 0 or not torch.isfinite(rates).all():
        raise ModelFileError(f"mix rates must be finite numbers, one per model; got {list(mix_rate)}")
    return torch.softmax(rates, dim=0) if name == "convex" else rates


def mix_states(states: Sequence[Mapping[str, Any]], weights: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """Σ_i weights[i] · states[i][key] for every key of the first state dict, summed in at least float32 (no
    fp16 rounding per step) and cast to the first model's dtype; non-float tensors must be equal.
    Raises ModelFileError naming the files whose structure differs."""
    first = states[0]
    for state, name in zip(states[1:], names[1:]):
        problems = state_differences(first, state, names[0], name)
        if problems:
            raise ModelFileError(f"cannot mix {name} with {names[0]}: " + "; ".join(problems)
                                 + ". Only models trained with the same config can be mixed.")
    out: dict[str, Any] = OrderedDict() if isinstance(first, OrderedDict) else {}
    done: dict[tuple, torch.Tensor] = {}
    for key, value in first.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        if not value.is_floating_point():
            differ = [n for s, n in zip(states[1:], names[1:]) if not torch.equal(s[key], value)]
            if differ:
                raise ModelFileError(f"cannot mix: integer tensor {key} differs in {', '.join(differ)}")
            out[key] = value
            continue
        acc_dtype = torch.promote_types(value.dtype, torch.float32)
        acc = torch.zeros(value.shape, dtype=acc_dtype)
        for state, w in zip(states, weights):
            acc += state[key].to(acc_dtype) * w.to(acc_dtype)
        mixed = acc.to(value.dtype)
        alias = alias_key(value)
        if alias in done and torch.equal(done[alias], mixed):
            mixed = done[alias]  # the first file shares this tensor between keys: keep it shared
        else:
            done[alias] = mixed
        out[key] = mixed
    return out


def mix_model(model_paths: Sequence[PathLike], mix_rate: Sequence[float], mode: int | str = 0,
              output: PathLike = os.path.join(os.curdir, "output.pth"), net_g: nn.Module | None = None,
              config_path: PathLike = "") -> str:
    """Mix G_*.pth files (full or release, one config; one percentage each) into `output`, atomically: the first
    checkpoint's dict with `model` replaced. net_g: an optional fresh model of `config_path` to check against.
    Raises ModelFileError (counts, mode, structures, output = an input) or CheckpointError (unreadable)."""
    paths = [os.fspath(p) for p in model_paths]
    output = os.fspath(output)
    if not paths:
        raise ModelFileError("no models to mix")
    if len(mix_rate) != len(paths):
        raise ModelFileError(f"{len(paths)} models but {len(mix_rate)} mix rates; give one percentage per model")
    weights = mix_weights(mix_rate, mode)
    for path in paths:
        if os.path.exists(output) and os.path.exists(path) and os.path.samefile(output, path):
            raise ModelFileError(f"refusing to overwrite the input {path} with the mix; choose another output")
    ckpts = [read_checkpoint(p) for p in paths]
    if net_g is not None:
        check_fit(ckpts[0]["model"], net_g, paths[0], os.fspath(config_path) or "the config")
    total = float(weights.sum())
    if _mode_name(mode) == "linear" and abs(total - 1) > 1e-6:
        logger.warning("linear mix weights sum to %g, not 1: every weight is scaled by that factor "
                       "(give percentages that add up to 100)", total)
    result = dict(ckpts[0])
    result["model"] = mix_states([c["model"] for c in ckpts], weights, paths)
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    write_atomic(output, lambda f: torch.save(result, f))
    return output
