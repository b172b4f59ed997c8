"""Release files (`compress_model.py`): 4.1's dict of a G_<step>.pth without `enc_q` (the posterior encoder),
optionally fp16, with iteration 0, a fresh AdamW state and learning_rate 0.0001. Training cannot resume from it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from core.atomic import write_atomic
from core.checkpoint import (POSTERIOR_ENCODER, CheckpointError, first_float_dtype, is_release_state,
                             read_checkpoint)
from core.config import ConfigError, HParams
from generator import check_fit, require_generator

__all__ = ["CompressResult", "ModelFileError", "RELEASE_LEARNING_RATE", "alias_key", "compress_model",
           "default_release_path", "fresh_optimizer_state", "release_state"]

PathLike = str | os.PathLike
RELEASE_LEARNING_RATE = 0.0001  # 4.1 writes this constant, whatever the config says


class ModelFileError(CheckpointError):
    """A model tool refused its inputs; the message names the files and what differs."""


@dataclass
class CompressResult:
    output: str
    kept: int  # model entries written
    removed: int  # enc_q entries dropped (0 when the input was already a release)
    dtype: torch.dtype
    input_bytes: int
    output_bytes: int


def alias_key(t: torch.Tensor) -> tuple:
    # Tensors sharing storage, offset, shape and stride are one tensor saved under several keys
    # (flow_share_parameter); keeping them shared keeps the file small and the aliasing intact.
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def default_release_path(input_path: PathLike, half: bool) -> str:
    """`<stem>_release[_half]<ext>` next to the input; `*_release` with `half` gives `*_release_half`."""
    stem, ext = os.path.splitext(os.fspath(input_path))
    if half and stem.endswith("_release"):
        return f"{stem}_half{ext}"
    return f"{stem}_release{'_half' if half else ''}{ext}"


def release_state(state: Mapping[str, Any], half: bool) -> dict[str, torch.Tensor]:
    """The entries without `enc_q` in the name, in order; `half`: float tensors as float16, still shared."""
    out: dict[str, torch.Tensor] = {}
    converted: dict[tuple, torch.Tensor] = {}
    for key, value in state.items():
        if POSTERIOR_ENCODER in key:
            continue
        if half and isinstance(value, torch.Tensor) and value.is_floating_point():
            value = converted.setdefault(alias_key(value), value.half())
        out[key] = value
    return out


def fresh_optimizer_state(net_g: nn.Module, hps: HParams, config_name: str) -> dict[str, Any]:
    """State dict of a new AdamW over `net_g` with the config's lr/betas/eps (4.1 relies on the default
    weight decay 0.01): empty `state`, params 0..N-1 in registration order."""
    train = hps.get("train") or {}
    try:
        optimizer = torch.optim.AdamW(net_g.parameters(), float(train["learning_rate"]),
                                      betas=tuple(float(b) for b in train["betas"]), eps=float(train["eps"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{config_name}: the release file's optimizer state needs usable train.learning_rate, "
                          f"betas and eps ({err.args[0] if err.args else err})", config_name, "train") from None
    return optimizer.state_dict()


def compress_model(input_path: PathLike, net_g: nn.Module, hps: HParams, config_path: PathLike,
                   output_path: PathLike | None = None, half: bool = False) -> CompressResult:
    """Write the release file of a full G_<step>.pth atomically (default path: `default_release_path`).
    net_g: a freshly built generator of `hps` (checks the fit, sizes the optimizer state). Raises ModelFileError
    when the input is already a release (except float32 + `half`), does not fit the config or would be
    overwritten; CheckpointError for an unreadable input."""
    input_path, config_name = os.fspath(input_path), os.fspath(config_path)
    output = os.fspath(output_path) if output_path else default_release_path(input_path, half)
    state = read_checkpoint(input_path)["model"]
    dtype = first_float_dtype(state) or torch.float32
    require_generator(state, input_path)
    if is_release_state(state) and not (half and dtype == torch.float32):
        already = "an fp16 release" if dtype == torch.float16 else "a release"
        hint = "" if dtype == torch.float16 else " (add -hf/--half to make an fp16 copy of it)"
        raise ModelFileError(
            f"{input_path} is already {already} file (no enc_q.* weights: compress_model.py output); "
            f"there is nothing to strip{hint}. Compress the full G_<step>.pth written by train.py instead.")
    check_fit(state, net_g, input_path, config_name)
    if os.path.exists(output) and os.path.samefile(output, input_path):
        raise ModelFileError(f"refusing to overwrite the input {input_path} with its release file; "
                             "choose another -o/--output")
    model = release_state(state, half)
    payload = {"model": model, "iteration": 0, "optimizer": fresh_optimizer_state(net_g, hps, config_name),
               "learning_rate": RELEASE_LEARNING_RATE}
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    write_atomic(output, lambda f: torch.save(payload, f))
    return CompressResult(output=output, kept=len(model), removed=len(state) - len(model),
                          dtype=torch.float16 if half else dtype, input_bytes=os.path.getsize(input_path),
                          output_bytes=os.path.getsize(output))
