"""Load a So-VITS generator for conversion, and pick the speech encoder that feeds it."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from core.config import HParams
from core.schema import SovitsConfig
from generator import ModelConfigMismatch, load_generator
from models import SynthesizerTrn
from vencoder import encoders_of_width

__all__ = ["LoadedModel", "ModelConfigMismatch", "check_encoder_width", "infer_speech_encoder", "load_sovits"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike

# 4.0-era configs have no speech_encoder; these widths identify the encoder without doubt.
_ENCODER_BY_WIDTH = {768: "vec768l12", 256: "vec256l9"}


@dataclass
class LoadedModel:
    net_g: SynthesizerTrn  # eval mode, weight norm folded, on the device
    config: SovitsConfig
    dtype: torch.dtype
    has_f0_decoder: bool  # weights for -a/--auto_predict_f0 are present


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
    hint = f"Set \"speech_encoder\": \"{options[0]}\"" + (f" (or {', '.join(options[1:])})" if options[1:] else "")
    raise ModelConfigMismatch(
        f"This model takes {units_width}-dim units but speech_encoder '{encoder_name}' gives {encoder_dim}. "
        f"{hint if options else 'Use the speech encoder the model was trained with'} in the model section of "
        f"{config_path}.")


def load_sovits(model_path: PathLike, hps: HParams, config_path: PathLike, device: torch.device) -> LoadedModel:
    """The generator of `model_path` ready for conversion on `device` (raises what `load_generator` raises).
    fp16 files (or, as in 4.1, a path containing "half") run in fp16 on CUDA, in fp32 on the CPU (slow there)."""
    model_path = os.fspath(model_path)
    loaded = load_generator(model_path, hps, config_path)
    if not loaded.has_f0_decoder and loaded.net.use_automatic_f0_prediction:
        logger.warning("%s has no F0-predictor weights (4.0-era model?): -a/--auto_predict_f0 is unavailable",
                       model_path)
    dtype = torch.float32 if device.type != "cuda" else torch.float16 if "half" in model_path \
        else loaded.report.dtype or torch.float32
    net_g = loaded.net.to(dtype).eval()
    net_g.remove_weight_norm()
    return LoadedModel(net_g.to(device), loaded.config, dtype, loaded.has_f0_decoder)
