"""Pick the speech encoder that feeds a So-VITS generator, and check that its units fit."""
from __future__ import annotations

import logging
import os

from generator import ModelConfigMismatch
from vencoder import encoders_of_width

__all__ = ["ModelConfigMismatch", "check_encoder_width", "infer_speech_encoder"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike

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
    hint = f"Set \"speech_encoder\": \"{options[0]}\"" + (f" (or {', '.join(options[1:])})" if options[1:] else "")
    raise ModelConfigMismatch(
        f"This model takes {units_width}-dim units but speech_encoder '{encoder_name}' gives {encoder_dim}. "
        f"{hint if options else 'Use the speech encoder the model was trained with'} in the model section of "
        f"{config_path}.")
