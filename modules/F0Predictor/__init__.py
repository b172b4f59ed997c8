"""F0 predictors keyed by the 4.1 config / CLI names (``--f0_predictor``).

Heavy dependencies (parselmouth, pyworld, torch models) are imported only when a predictor is built.
"""
from __future__ import annotations

import importlib

from modules.F0Predictor.F0Predictor import F0Predictor

# name -> (module in this package, class, constructor takes device and threshold); None = not yet
# available in this rebuild.
F0_PREDICTORS: dict[str, tuple[str, str, bool] | None] = {
    "pm": ("PMF0Predictor", "PMF0Predictor", False),
    "dio": ("DioF0Predictor", "DioF0Predictor", False),
    "harvest": ("HarvestF0Predictor", "HarvestF0Predictor", False),
    "crepe": ("CrepeF0Predictor", "CrepeF0Predictor", True),
    "rmvpe": ("RMVPEF0Predictor", "RMVPEF0Predictor", True),
    "fcpe": ("FCPEF0Predictor", "FCPEF0Predictor", True),
}


def get_f0_predictor(
    name: str,
    hop_length: int = 512,
    sampling_rate: int = 44100,
    device: str | None = None,
    threshold: float = 0.05,
) -> F0Predictor:
    """Build the F0 predictor registered as ``name``.

    Args:
        name: one of ``F0_PREDICTORS`` (``pm``, ``dio``, ``harvest``, ``crepe``, ``rmvpe``, ``fcpe``).
        hop_length: frame hop in samples.
        sampling_rate: audio rate in Hz.
        device: torch device of the neural predictors (ignored by pm/dio/harvest).
        threshold: voicing confidence threshold of the neural predictors (ignored by pm/dio/harvest).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        NotImplementedError: a known predictor that this rebuild does not provide yet.
    """
    if name not in F0_PREDICTORS:
        valid = ", ".join(sorted(F0_PREDICTORS))
        raise ValueError(f"Unknown F0 predictor {name!r}; valid names: {valid}")
    entry = F0_PREDICTORS[name]
    if entry is None:
        raise NotImplementedError(
            f"F0 predictor {name!r} is not available yet: it arrives with the dataset-preparation "
            "work; use pm, dio or harvest meanwhile"
        )
    module_name, class_name, neural = entry
    cls = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    if neural:
        return cls(
            hop_length=hop_length, sampling_rate=sampling_rate, device=device, threshold=threshold
        )
    return cls(hop_length=hop_length, sampling_rate=sampling_rate)


__all__ = ["F0_PREDICTORS", "F0Predictor", "get_f0_predictor"]
