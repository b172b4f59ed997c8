"""Derived model files: compressed release checkpoints and static voice mixes (formats.md §8.1, §8.2).

* Release (`compress_model.py`): the `model` entries of a G_<step>.pth minus every key containing
  `enc_q` (the posterior encoder, used only in training), optionally fp16, with iteration 0, a fresh
  AdamW state (no moments, one param group over every parameter of a freshly built model, enc_q
  included) and learning_rate 0.0001 — the dict 4.1 writes, so 4.1 and this rebuild both load it.
  Such a file is inference-only: training cannot resume from it (`ReleaseCheckpointError`).
* Static mix (`model_mix.py`, the web UI's tools tab): Σ_i w_i · model_i per tensor, w = softmax of
  percent/100 (convex) or percent/100 (linear); the other entries come from the first file.

The network itself is built by the caller (`models` sits above `modules/`): pass a fresh
`models.build_synthesizer(hps)` where a config has to be checked or an optimizer built.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from core.checkpoint import (
    POSTERIOR_ENCODER,
    CheckpointError,
    ReleaseCheckpointError,
    first_float_dtype,
    is_release_state,
    read_checkpoint,
    to_legacy_weight_norm,
)
from core.atomic import write_atomic
from core.config import ConfigError, HParams, load_config
from core.schema import validate_sovits_config

__all__ = [
    "CompressResult",
    "ModelFileError",
    "ReleaseCheckpointError",
    "RELEASE_LEARNING_RATE",
    "compress_model",
    "default_release_path",
    "fresh_optimizer_state",
    "load_model_config",
    "mix_model",
    "mix_states",
    "mix_weights",
    "release_state",
    "structure_differences",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
RELEASE_LEARNING_RATE = 0.0001  # 4.1 writes this constant, whatever the config says
MIX_MODES = {0: "convex", 1: "linear"}
# Which config field decides a tensor's shape, for mismatch hints.
_SHAPE_HINTS = (("pre.", "model.ssl_dim"), ("emb_g.", "model.n_speakers / model.gin_channels"),
                ("emb_vol.", "model.vol_embedding"), ("f0_decoder.", "model.use_automatic_f0_prediction"))


class ModelFileError(CheckpointError):
    """A model tool refused its inputs; the message names the files and what differs."""


@dataclass
class CompressResult:
    """What `compress_model` wrote."""

    output: str
    kept: int  # model entries written
    removed: int  # enc_q entries dropped (0 when the input was already a release)
    dtype: torch.dtype
    input_bytes: int
    output_bytes: int


# ------------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------------
def load_model_config(config_path: PathLike) -> HParams:
    """Read a So-VITS config.json and check the fields that building the model needs.

    Raises:
        ConfigError (ConfigNotFoundError when missing): the message names the file and field.
    """
    hps = load_config(config_path)
    validate_sovits_config(hps, config_path, for_training=False)
    return hps


def _alias_key(t: torch.Tensor) -> tuple:
    # Tensors sharing storage, offset, shape and stride are one tensor saved under several keys
    # (flow_share_parameter); keeping them shared keeps the file small and the aliasing intact.
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _some(keys: Sequence[str], limit: int = 6) -> str:
    """A short listing; long lists are grouped by their first name part (`enc_q.* (103 keys)`)."""
    if len(keys) <= limit:
        return ", ".join(keys)
    groups: OrderedDict[str, int] = OrderedDict()
    for key in keys:
        head = key.split(".", 1)[0]
        groups[head] = groups.get(head, 0) + 1
    parts = [f"{head}.* ({n} key{'s' if n > 1 else ''})" for head, n in list(groups.items())[:limit]]
    more = f", ... ({len(groups) - limit} more groups)" if len(groups) > limit else ""
    return ", ".join(parts) + more


def structure_differences(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str,
                          ignore_missing_enc_q: bool = False) -> list[str]:
    """Human-readable differences of two state dicts' keys and shapes (empty when they fit).

    Args:
        a, b: state dicts (key -> tensor); weight-norm keys are compared under their legacy names.
        name_a, name_b: how to call them in the messages (file names).
        ignore_missing_enc_q: enc_q.* keys present in only one of them are not a difference
            (a release file against a full model).
    """
    a, b = to_legacy_weight_norm(a), to_legacy_weight_norm(b)
    problems: list[str] = []
    emb_a, emb_b = a.get("emb_g.weight"), b.get("emb_g.weight")
    if isinstance(emb_a, torch.Tensor) and isinstance(emb_b, torch.Tensor) and emb_a.shape[0] != emb_b.shape[0]:
        problems.append(f"{name_b} has {emb_b.shape[0]} speakers (emb_g.weight {list(emb_b.shape)}) but "
                        f"{name_a} has {emb_a.shape[0]} (emb_g.weight {list(emb_a.shape)})")
    said = {"emb_g.weight"} if problems else set()  # the speaker line already shows its shapes

    def skip(key: str) -> bool:
        return ignore_missing_enc_q and POSTERIOR_ENCODER in key

    only_a = [k for k in a if k not in b and not skip(k)]
    only_b = [k for k in b if k not in a and not skip(k)]
    if only_a or only_b:
        sides = [f"only in {n}: {_some(keys)}" for n, keys in ((name_a, only_a), (name_b, only_b)) if keys]
        problems.append("keys differ: " + "; ".join(sides))
    shapes = [k for k in a if k in b and k not in said and isinstance(a[k], torch.Tensor)
              and isinstance(b[k], torch.Tensor) and a[k].shape != b[k].shape]
    if shapes:
        listed = [f"{k} {list(a[k].shape)} in {name_a} vs {list(b[k].shape)} in {name_b}" for k in shapes[:6]]
        more = f", ... ({len(shapes) - 6} more)" if len(shapes) > 6 else ""
        problems.append("shapes differ: " + ", ".join(listed) + more)
    return problems


def _config_hint(problems: list[str]) -> str:
    # A key starts after a space or "(" in the messages; "flow.flows.0.pre.weight" is not "pre.".
    fields = [field for prefix, field in _SHAPE_HINTS
              if any(f" {prefix}" in p or f"({prefix}" in p for p in problems)]
    return f" (check {', '.join(fields)})" if fields else ""


def _require_generator(state: Mapping[str, Any], model_name: str) -> None:
    if "pre.weight" not in state or "emb_g.weight" not in state:
        raise ModelFileError(f"{model_name} has no pre.weight / emb_g.weight: not a So-VITS generator "
                             "checkpoint (G_*.pth)? D_*.pth files are discriminators")


def _check_against_config(state: Mapping[str, Any], net_g: nn.Module, model_name: str,
                          config_name: str) -> None:
    built = f"the model built from {config_name}"
    _require_generator(state, model_name)
    problems = structure_differences(state, net_g.state_dict(), model_name, built, ignore_missing_enc_q=True)
    if problems:
        raise ModelFileError(f"{model_name} does not fit {config_name}{_config_hint(problems)}: "
                             + "; ".join(problems) + ". Use the config.json the model was trained with.")


# ------------------------------------------------------------------------------------------------
# compression
# ------------------------------------------------------------------------------------------------
def default_release_path(input_path: PathLike, half: bool) -> str:
    """`<input stem>_release[_half]<input ext>` next to the input; a `*_release` input given `--half`
    becomes `*_release_half` (not `*_release_release_half`)."""
    stem, ext = os.path.splitext(os.fspath(input_path))
    if half and stem.endswith("_release"):
        return f"{stem}_half{ext}"
    return f"{stem}_release{'_half' if half else ''}{ext}"


def release_state(state: Mapping[str, Any], half: bool) -> dict[str, torch.Tensor]:
    """The release `model` dict: entries without `enc_q` in the name, order kept; `half` converts
    every float tensor to float16 (shared tensors stay shared)."""
    out: dict[str, torch.Tensor] = {}
    converted: dict[tuple, torch.Tensor] = {}
    for key, value in state.items():
        if POSTERIOR_ENCODER in key:
            continue
        if half and isinstance(value, torch.Tensor) and value.is_floating_point():
            alias = _alias_key(value)
            if alias not in converted:
                converted[alias] = value.half()
            value = converted[alias]
        out[key] = value
    return out


def fresh_optimizer_state(net_g: nn.Module, hps: HParams, config_name: str) -> dict[str, Any]:
    """State dict of a new AdamW over `net_g` with the config's lr/betas/eps (weight decay 0.01,
    the AdamW default 4.1 relies on): empty `state`, params 0..N-1 in registration order."""
    train = hps.get("train")
    values = {}
    for name in ("learning_rate", "betas", "eps"):
        value = train.get(name) if train is not None else None
        if value is None:
            raise ConfigError(f"{config_name}: train.{name} is missing (needed for the release file's "
                              "optimizer state)", config_name, f"train.{name}")
        values[name] = value
    try:
        betas = tuple(float(b) for b in values["betas"])
        optimizer = torch.optim.AdamW(net_g.parameters(), float(values["learning_rate"]), betas=betas,
                                      eps=float(values["eps"]))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{config_name}: train.learning_rate / betas / eps are not usable ({err})",
                          config_name, "train") from None
    return optimizer.state_dict()


def compress_model(input_path: PathLike, net_g: nn.Module, hps: HParams, config_path: PathLike,
                   output_path: PathLike | None = None, half: bool = False) -> CompressResult:
    """Write the release file of a full G_<step>.pth (formats.md §8.1), atomically.

    Args:
        input_path: full training checkpoint.
        net_g: a freshly built `SynthesizerTrn` for `hps` (checks the fit, sizes the optimizer state).
        hps, config_path: the config and its file name (for messages).
        output_path: default `default_release_path(input_path, half)`.
        half: store float tensors as float16.
    Raises:
        ModelFileError: the input is already a release (except float32 release + `half`), does not fit
            the config, or the output would overwrite the input.
        CheckpointError (incl. CheckpointNotFoundError): unreadable input. ConfigError: bad train fields.
    """
    input_path, config_name = os.fspath(input_path), os.fspath(config_path)
    output = os.fspath(output_path) if output_path else default_release_path(input_path, half)
    ckpt = read_checkpoint(input_path)
    state = ckpt["model"]
    dtype = first_float_dtype(state) or torch.float32
    _require_generator(state, input_path)
    if is_release_state(state) and not (half and dtype == torch.float32):
        already = "an fp16 release" if dtype == torch.float16 else "a release"
        hint = "" if dtype == torch.float16 else " (add -hf/--half to make an fp16 copy of it)"
        raise ModelFileError(
            f"{input_path} is already {already} file (no enc_q.* weights: compress_model.py output); "
            f"there is nothing to strip{hint}. Compress the full G_<step>.pth written by train.py instead.")
    _check_against_config(state, net_g, input_path, config_name)
    if os.path.exists(output) and os.path.samefile(output, input_path):
        raise ModelFileError(f"refusing to overwrite the input {input_path} with its release file; "
                             "choose another -o/--output")
    model = release_state(state, half)
    payload = {
        "model": model,
        "iteration": 0,
        "optimizer": fresh_optimizer_state(net_g, hps, config_name),
        "learning_rate": RELEASE_LEARNING_RATE,
    }
    folder = os.path.dirname(output)
    if folder:
        os.makedirs(folder, exist_ok=True)
    write_atomic(output, lambda f: torch.save(payload, f))
    return CompressResult(output=output, kept=len(model), removed=len(state) - len(model),
                          dtype=torch.float16 if half else dtype, input_bytes=os.path.getsize(input_path),
                          output_bytes=os.path.getsize(output))


# ------------------------------------------------------------------------------------------------
# static mixing
# ------------------------------------------------------------------------------------------------
def _mode_name(mode: int | str) -> str:
    name = MIX_MODES.get(mode, "") if isinstance(mode, int) else str(mode).lower()
    if name not in MIX_MODES.values():
        raise ModelFileError(f"mix mode {mode!r} is not one of 0 / convex, 1 / linear")
    return name


def mix_weights(mix_rate: Sequence[float], mode: int | str = 0) -> torch.Tensor:
    """Per-model weights [N] (float32) from percentages, as 4.1's web UI computes them.

    mode 0 / "convex": softmax(percent / 100) — note this is not percent / Σpercent (50/30/20 gives
    0.391/0.320/0.289); mode 1 / "linear": percent / 100 as is.
    """
    name = _mode_name(mode)
    rates = torch.tensor([float(r) for r in mix_rate], dtype=torch.float32) / 100
    if rates.numel() == 0 or not torch.isfinite(rates).all():
        raise ModelFileError(f"mix rates must be finite numbers, one per model; got {list(mix_rate)}")
    return torch.softmax(rates, dim=0) if name == "convex" else rates


def mix_states(states: Sequence[Mapping[str, Any]], weights: torch.Tensor,
               names: Sequence[str]) -> dict[str, Any]:
    """Σ_i weights[i] · states[i][key] for every key of the first state dict.

    Float tensors are accumulated in float32 (float64 if the first model is float64) and cast to the
    first model's dtype, so fp16 releases mix without fp16 rounding at each step; non-float tensors
    must be equal and are copied. Raises ModelFileError naming the files whose structure differs.
    """
    first = states[0]
    for state, name in zip(states[1:], names[1:]):
        problems = structure_differences(first, state, names[0], name)
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
        alias = _alias_key(value)
        if alias in done and torch.equal(done[alias], mixed):
            mixed = done[alias]  # the first file shares this tensor between keys: keep it shared
        else:
            done[alias] = mixed
        out[key] = mixed
    return out


def mix_model(model_paths: Sequence[PathLike], mix_rate: Sequence[float], mode: int | str = 0,
              output: PathLike = os.path.join(os.curdir, "output.pth"), net_g: nn.Module | None = None,
              config_path: PathLike = "") -> str:
    """Static voice mix of several checkpoints into one file (4.1 web UI's `mix_model`).

    Args:
        model_paths: G_*.pth files (full or release) of models with the same config and speakers.
        mix_rate: one percentage per model.
        mode: 0 / "convex" (softmax of percent/100) or 1 / "linear" (percent/100).
        output: where to write (atomically); default ./output.pth as in 4.1.
        net_g: optional freshly built model of `config_path` to check the first file against.
    Returns:
        The output path. The file is the first checkpoint's dict with `model` replaced.
    Raises:
        ModelFileError: count mismatch, bad mode, differing structures, output = an input.
        CheckpointError: an unreadable input.
    """
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
        _check_against_config(ckpts[0]["model"], net_g, paths[0], os.fspath(config_path) or "the config")
    total = float(weights.sum())
    if _mode_name(mode) == "linear" and abs(total - 1) > 1e-6:
        logger.warning("linear mix weights sum to %g, not 1: every weight is scaled by that factor "
                       "(give percentages that add up to 100)", total)
    result = dict(ckpts[0])
    result["model"] = mix_states([c["model"] for c in ckpts], weights, paths)
    folder = os.path.dirname(output)
    if folder:
        os.makedirs(folder, exist_ok=True)
    write_atomic(output, lambda f: torch.save(result, f))
    return output
