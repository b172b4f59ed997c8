"""Load a So-VITS checkpoint + config for inference, with errors a user can act on (quirks.md E).

Checks, before anything runs: the config has the keys the model needs; the checkpoint's content
width (`pre.weight`) and speaker table (`emb_g.weight`) match `model.ssl_dim` / `model.n_speakers`
and the `spk` map; every other tensor fits; the speech encoder named by the config (or inferred from
the checkpoint when a 4.0-era config lacks it) produces units of the model's width.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from models import SynthesizerTrn, build_synthesizer
from core.checkpoint import load_model_state, read_checkpoint
from core.config import HParams
from vencoder import ENCODER_DIMS

__all__ = ["LoadedModel", "ModelConfigMismatch", "check_encoder_width", "infer_speech_encoder", "load_sovits",
           "resolve_device"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike

REQUIRED_MODEL_KEYS = (
    "inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers", "kernel_size",
    "p_dropout", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
    "upsample_initial_channel", "upsample_kernel_sizes", "gin_channels", "ssl_dim", "n_speakers",
)
# 4.0-era configs have no speech_encoder; these widths identify the encoder without doubt.
_ENCODER_BY_WIDTH = {768: "vec768l12", 256: "vec256l9"}


class ModelConfigMismatch(RuntimeError):
    """The checkpoint, its config and the speech encoder do not belong together."""


@dataclass
class LoadedModel:
    net_g: SynthesizerTrn
    dtype: torch.dtype
    units_width: int  # input channels of `pre`, i.e. the unit size the model was trained on
    has_f0_decoder: bool  # weights for -a/--auto_predict_f0 are present


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None / "auto" -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_config(hps: HParams, config_path: str) -> None:
    model = hps.get("model")
    if model is None:
        raise ModelConfigMismatch(f"{config_path} has no \"model\" section; is it a So-VITS config.json?")
    missing = [k for k in REQUIRED_MODEL_KEYS if model.get(k) is None]
    if missing:
        raise ModelConfigMismatch(f"{config_path} is missing model.{', model.'.join(missing)} "
                                  "(config/model mismatch? use the config.json the model was trained with)")
    spk = hps.get("spk")
    if not spk:
        raise ModelConfigMismatch(f"{config_path} has no \"spk\" speaker map")
    bad = {n: i for n, i in spk.items() if not isinstance(i, int) or not 0 <= i < model.n_speakers}
    if bad:
        raise ModelConfigMismatch(f"{config_path}: speaker ids {bad} are outside 0..{model.n_speakers - 1} "
                                  f"(model.n_speakers = {model.n_speakers})")


def _check_checkpoint(state: dict, hps: HParams, model_path: str, config_path: str) -> int:
    """Compare the tensors that define the model's interface with the config; returns the unit width."""
    pre = state.get("pre.weight")
    emb = state.get("emb_g.weight")
    if not isinstance(pre, torch.Tensor) or not isinstance(emb, torch.Tensor):
        raise ModelConfigMismatch(f"{model_path} has no pre.weight / emb_g.weight: not a So-VITS generator "
                                  "checkpoint (G_*.pth)? D_*.pth files are discriminators")
    width, n_spk, gin = int(pre.shape[1]), int(emb.shape[0]), int(emb.shape[1])
    model = hps.model
    if width != model.ssl_dim:
        raise ModelConfigMismatch(
            f"{model_path} takes {width}-dim units but {config_path} says model.ssl_dim = {model.ssl_dim}. "
            "Use the config.json the model was trained with (logs/44k/config.json).")
    if n_spk != model.n_speakers or gin != model.gin_channels:
        raise ModelConfigMismatch(
            f"{model_path} has {n_spk} speakers x {gin} embedding channels but {config_path} says "
            f"model.n_speakers = {model.n_speakers}, model.gin_channels = {model.gin_channels}. "
            "Use the config.json the model was trained with (logs/44k/config.json).")
    return width


def infer_speech_encoder(hps: HParams, units_width: int, config_path: str) -> str:
    """`model.speech_encoder`, or for configs without it the encoder implied by the unit width."""
    name = hps.model.get("speech_encoder")
    if name:
        return str(name)
    guess = _ENCODER_BY_WIDTH.get(units_width)
    if guess is None:
        options = [n for n, d in ENCODER_DIMS.items() if d == units_width]
        raise ModelConfigMismatch(
            f"{config_path} has no model.speech_encoder and the model takes {units_width}-dim units; set "
            f"\"speech_encoder\" in its model section to the encoder it was trained with "
            f"({' or '.join(options) or 'unknown width'})")
    if guess != "vec768l12":
        logger.warning("%s has no model.speech_encoder; the model takes %d-dim units, so using %s "
                       "(set \"speech_encoder\": \"hubertsoft\" if it was trained with HuBERT-Soft)",
                       config_path, units_width, guess)
    return guess


def check_encoder_width(encoder_name: str, encoder_dim: int, units_width: int, config_path: str) -> None:
    """Raise when the speech encoder's output does not fit the model's `pre` layer."""
    if encoder_dim == units_width:
        return
    options = [n for n, d in ENCODER_DIMS.items() if d == units_width]
    hint = f"Set \"speech_encoder\": \"{options[0]}\"" + (f" (or {', '.join(options[1:])})" if options[1:] else "") \
        if options else "Use the speech encoder the model was trained with"
    raise ModelConfigMismatch(
        f"This model takes {units_width}-dim units but speech_encoder '{encoder_name}' gives {encoder_dim}. "
        f"{hint} in the model section of {config_path}.")


def load_sovits(model_path: PathLike, hps: HParams, config_path: PathLike, device: torch.device) -> LoadedModel:
    """Build `SynthesizerTrn` from the config and load the checkpoint for inference.

    The model is put in eval mode with weight norm folded, on `device`; fp16 files (or a path
    containing "half" on CUDA, as 4.1 does) run in fp16 on CUDA and in fp32 on CPU (quirk 21).
    Raises:
        CheckpointError / FileNotFoundError: unreadable or missing file.
        ModelConfigMismatch: the file and the config disagree (message says what and how to fix).
    """
    model_path, config_path = os.fspath(model_path), os.fspath(config_path)
    _check_config(hps, config_path)
    if not os.path.isfile(model_path):
        folder = os.path.dirname(model_path) or "."
        found = sorted(f for f in os.listdir(folder) if f.startswith("G_") and f.endswith(".pth")) \
            if os.path.isdir(folder) else []
        hint = f"; {folder} has {', '.join(found)}" if found else ""
        raise FileNotFoundError(f"model {model_path} not found (give the checkpoint with -m){hint}")
    ckpt = read_checkpoint(model_path)
    state = dict(ckpt["model"])
    width = _check_checkpoint(state, hps, model_path, config_path)
    net_g = build_synthesizer(hps)
    report = load_model_state(net_g, state, source=model_path)
    if report.mismatched:
        shapes = "; ".join(f"{k} file {list(a)} vs config {list(b)}" for k, a, b in report.mismatched[:6])
        raise ModelConfigMismatch(f"{model_path} does not fit {config_path}: {len(report.mismatched)} tensors "
                                  f"differ in shape ({shapes}). Use the config.json the model was trained with.")
    missing = [k for k in report.missing if not k.startswith("enc_q.")]
    has_f0_decoder = not any(k.startswith("f0_decoder.") for k in missing)
    missing = [k for k in missing if not k.startswith("f0_decoder.")]
    if missing:
        raise ModelConfigMismatch(
            f"{model_path} lacks {len(missing)} tensors that {config_path} asks for ({', '.join(missing[:6])}"
            f"{', ...' if len(missing) > 6 else ''}); check model.vol_embedding, vocoder_name, "
            "use_transformer_flow and the other model keys against the config it was trained with.")
    if not has_f0_decoder and net_g.use_automatic_f0_prediction:
        logger.warning("%s has no F0-predictor weights (4.0-era model?): -a/--auto_predict_f0 is unavailable",
                       model_path)
    dtype = report.dtype or torch.float32
    if device.type != "cuda":
        dtype = torch.float32  # fp16 convolutions are unsupported or very slow on CPU
    elif "half" in model_path:
        dtype = torch.float16
    net_g = net_g.to(dtype).eval()
    net_g.remove_weight_norm()
    net_g.to(device)
    return LoadedModel(net_g=net_g, dtype=dtype, units_width=width, has_f0_decoder=has_f0_decoder)
