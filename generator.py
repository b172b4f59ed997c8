"""The So-VITS generator a config describes: built from the typed config and loaded from a `G_*.pth`
(or release) file, with one diagnosis of whether the file (and the speech encoder feeding it) fits the
config. Inference, training resume, compress/mix and the ONNX export all ask here, so they word a
misfit the same way.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from core.checkpoint import (CheckpointError, CheckpointNotFoundError, LoadReport, load_model_state,
                             read_checkpoint, to_legacy_weight_norm)
from core.config import HParams
from core.schema import SovitsConfig, sovits_config
from models import SynthesizerTrn
from vencoder import encoders_of_width

__all__ = ["LoadedGenerator", "ModelConfigMismatch", "build_synthesizer", "check_encoder_width", "check_fit",
           "infer_speech_encoder", "load_generator", "require_generator", "state_differences", "width_problem"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
ADVICE = "Use the config.json the model was trained with (logs/44k/config.json)."
# Keys a usable file may lack: release files drop enc_q (training only); 4.0-era models have no F0 decoder.
OPTIONAL_PREFIXES = ("enc_q.", "f0_decoder.")
# The config field that decides a tensor's shape, named in the message when that tensor differs.
_SHAPE_FIELDS = (("pre.", "model.ssl_dim"), ("emb_g.", "model.n_speakers / model.gin_channels"),
                 ("emb_vol.", "model.vol_embedding"), ("f0_decoder.", "model.use_automatic_f0_prediction"),
                 ("flow.", "model.use_transformer_flow / n_flow_layer / flow_share_parameter"),
                 ("dec.", "model.vocoder_name / upsample_* / resblock_*"))


class ModelConfigMismatch(CheckpointError):
    """The generator file, its config and the speech encoder do not belong together (message says how)."""


def build_synthesizer(config: HParams | SovitsConfig) -> SynthesizerTrn:
    """A freshly initialised generator for a config, built as 4.1 builds it:
    `SynthesizerTrn(filter_length // 2 + 1, segment_size // hop_length, **model)`."""
    cfg = config if isinstance(config, SovitsConfig) else sovits_config(config)
    return SynthesizerTrn(cfg.spec_channels, cfg.segment_frames, **cfg.model.network_args())


def require_generator(state: Mapping[str, Any], name: str) -> None:
    """Refuse a state dict that is no So-VITS generator (most often a D_*.pth given by mistake)."""
    if "pre.weight" not in state or "emb_g.weight" not in state:
        raise ModelConfigMismatch(f"{name} has no pre.weight / emb_g.weight: not a So-VITS generator checkpoint "
                                  "(G_*.pth)? D_*.pth files are discriminators")


def width_problem(state: Mapping[str, Any], ssl_dim: int, name: str, config_name: str) -> str | None:
    """The unit-width misfit of a file (its `pre` layer) against `model.ssl_dim`, naming the encoders
    that give the file's width; None when they agree."""
    pre = state.get("pre.weight")
    if not isinstance(pre, torch.Tensor) or pre.dim() != 3 or pre.shape[1] == ssl_dim:
        return None
    width = int(pre.shape[1])
    encoders = encoders_of_width(width, onnx=False)
    verb = "gives" if len(encoders) == 1 else "give"
    made_for = f"; {' / '.join(encoders)} {verb} {width}-dim units" if encoders else ""
    expected = [pre.shape[0], ssl_dim, pre.shape[2]]
    return (f"{name} takes {width}-dim units but {config_name} says model.ssl_dim = {ssl_dim} "
            f"(pre.weight {list(pre.shape)} vs {expected}{made_for})")


def _some(keys: list[str], limit: int = 6) -> str:
    """A short listing; long lists are grouped by their first name part (`enc_q.* (103 keys)`)."""
    if len(keys) <= limit:
        return ", ".join(keys)
    groups = Counter(key.split(".", 1)[0] for key in keys)
    parts = [f"{head}.* ({n} key{'s' if n > 1 else ''})" for head, n in list(groups.items())[:limit]]
    return ", ".join(parts) + (f", ... ({len(groups) - limit} more groups)" if len(groups) > limit else "")


def state_differences(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str,
                      optional: tuple[str, ...] = (), said: frozenset[str] = frozenset()) -> list[str]:
    """Key and shape differences of two generator state dicts (legacy weight-norm names), one line each.
    Keys under `optional` prefixes may be missing on either side; keys in `said` are not reported."""
    a, b = to_legacy_weight_norm(a), to_legacy_weight_norm(b)
    only_a = [k for k in a if k not in b and not k.startswith(optional)]
    only_b = [k for k in b if k not in a and not k.startswith(optional)]
    problems = []
    emb_a, emb_b = a.get("emb_g.weight"), b.get("emb_g.weight")
    if "emb_g.weight" not in said and isinstance(emb_a, torch.Tensor) and isinstance(emb_b, torch.Tensor) \
            and emb_a.shape[0] != emb_b.shape[0]:
        problems.append(f"{name_b} has {emb_b.shape[0]} speakers (emb_g.weight {list(emb_b.shape)}) but "
                        f"{name_a} has {emb_a.shape[0]} (emb_g.weight {list(emb_a.shape)})")
        said = said | {"emb_g.weight"}
    if only_a or only_b:
        problems.append("keys differ: " + "; ".join(f"only in {n}: {_some(keys)}" for n, keys in
                                                    ((name_a, only_a), (name_b, only_b)) if keys))
    shapes = [k for k in a if k in b and k not in said and isinstance(a[k], torch.Tensor)
              and isinstance(b[k], torch.Tensor) and a[k].shape != b[k].shape]
    if shapes:
        listed = [f"{k} {list(a[k].shape)} in {name_a} vs {list(b[k].shape)} in {name_b}" for k in shapes[:6]]
        more = f", ... ({len(shapes) - 6} more)" if len(shapes) > 6 else ""
        problems.append("shapes differ: " + ", ".join(listed) + more)
    return problems


def check_fit(state: Mapping[str, Any], net: nn.Module, name: str, config_name: str,
              advice: str = ADVICE) -> None:
    """Raise ModelConfigMismatch naming everything about `state` that does not fit the freshly built `net`, and
    the config fields to check; keys under OPTIONAL_PREFIXES may be absent from the file."""
    require_generator(state, name)
    file_sd, model_sd = to_legacy_weight_norm(state), to_legacy_weight_norm(net.state_dict())
    width = width_problem(file_sd, int(model_sd["pre.weight"].shape[1]), name, config_name)
    problems = [width] if width else []
    emb, own = file_sd.get("emb_g.weight"), model_sd["emb_g.weight"]
    if isinstance(emb, torch.Tensor) and emb.shape != own.shape:
        problems.append(f"{name} has {emb.shape[0]} speakers x {emb.shape[1]} embedding channels but "
                        f"{config_name} says model.n_speakers = {own.shape[0]}, "
                        f"model.gin_channels = {own.shape[1]}")
    said = frozenset({"pre.weight", "emb_g.weight"})
    problems += state_differences(file_sd, model_sd, "the file", "the config", OPTIONAL_PREFIXES, said)
    if not problems:
        return
    keys = [k for k in set(file_sd) ^ set(model_sd) if not k.startswith(OPTIONAL_PREFIXES)]
    keys += [k for k in model_sd if k in file_sd and getattr(file_sd[k], "shape", None) != model_sd[k].shape]
    fields = [f for prefix, f in _SHAPE_FIELDS if any(k.startswith(prefix) for k in keys)]
    check = f" (check {', '.join(fields)})" if fields else ""
    raise ModelConfigMismatch(f"{name} does not fit {config_name}{check}: " + "; ".join(problems) + f". {advice}")


@dataclass
class LoadedGenerator:
    net: SynthesizerTrn  # without a device: the file's float dtype, train mode, weight norm applied, on the CPU
    config: SovitsConfig
    report: LoadReport
    has_f0_decoder: bool  # weights for automatic F0 prediction are present
    dtype: torch.dtype = torch.float32


def load_generator(model_path: PathLike, hps: HParams, config_path: PathLike = "",
                   device: torch.device | None = None) -> LoadedGenerator:
    """Check the config, read the file safely, check that it fits, and load it into a new generator; with a
    `device`, ready for conversion there: eval mode, weight norm folded, fp16 files (or, as in 4.1, a path
    containing "half") in fp16 on CUDA and in fp32 on the CPU, where fp16 is slow.

    Raises:
        ConfigError: the config lacks or mistypes a field.
        CheckpointNotFoundError / CheckpointError: missing or unreadable file.
        ModelConfigMismatch: the file does not fit the config (message says what differs).
    """
    model_path, config_name = os.fspath(model_path), os.fspath(config_path) or "the config"
    cfg = sovits_config(hps, config_path)
    if not os.path.isfile(model_path):
        folder = os.path.dirname(model_path) or "."
        found = sorted(f for f in os.listdir(folder) if f.startswith("G_") and f.endswith(".pth")) \
            if os.path.isdir(folder) else []
        listing = f"; {folder} has {', '.join(found)}" if found else ""
        raise CheckpointNotFoundError(f"model {model_path} not found{listing}")
    state = read_checkpoint(model_path)["model"]
    net = build_synthesizer(cfg)
    check_fit(state, net, model_path, config_name)
    report = load_model_state(net, state, source=model_path)
    loaded = LoadedGenerator(net, cfg, report, not any(k.startswith("f0_decoder.") for k in report.missing))
    if device is not None:
        loaded.dtype = torch.float32 if device.type != "cuda" else torch.float16 if "half" in model_path \
            else report.dtype or torch.float32
        net.to(loaded.dtype).eval().remove_weight_norm()
        net.to(device)
    return loaded


# 4.0-era configs have no speech_encoder; these widths identify the encoder without doubt.
_ENCODER_BY_WIDTH = {768: "vec768l12", 256: "vec256l9"}


def infer_speech_encoder(name: str | None, units_width: int, config_path: str) -> str:
    """`model.speech_encoder` (`name`), or for configs without it the encoder implied by the unit width."""
    if name:
        return name
    guess = _ENCODER_BY_WIDTH.get(units_width)
    if guess is None:
        raise ModelConfigMismatch(
            f"{config_path} has no model.speech_encoder and the model takes {units_width}-dim units; set "
            f"\"speech_encoder\" in its model section to the encoder it was trained with "
            f"({' or '.join(encoders_of_width(units_width)) or 'unknown width'})")
    if guess != "vec768l12":
        logger.warning("%s has no model.speech_encoder; the model takes %d-dim units, so using %s "
                       "(set \"speech_encoder\": \"hubertsoft\" if it was trained with HuBERT-Soft)",
                       config_path, units_width, guess)
    return guess


def check_encoder_width(encoder_name: str, encoder_dim: int, units_width: int, config_path: str) -> None:
    """Raise ModelConfigMismatch when the speech encoder's output does not fit the model's `pre` layer."""
    if encoder_dim == units_width:
        return
    options = encoders_of_width(units_width)
    hint = (f"Set \"speech_encoder\": \"{options[0]}\"" + (f" (or {', '.join(options[1:])})" if options[1:] else "")
            if options else "Use the speech encoder the model was trained with")
    raise ModelConfigMismatch(
        f"This model takes {units_width}-dim units but speech_encoder '{encoder_name}' gives {encoder_dim}. "
        f"{hint} in the model section of {config_path}.")
