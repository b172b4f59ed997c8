"""F0 predictors by their ``--f0_predictor`` name. Importing this package is cheap: a predictor's module
(and parselmouth, pyworld or torch) loads only when :func:`get_f0_predictor` builds it."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modules.F0Predictor.F0Predictor import F0Predictor

# name -> class, defined in the module of the same name in this package.
_CLASSES = {"pm": "PMF0Predictor", "dio": "DioF0Predictor", "harvest": "HarvestF0Predictor",
            "crepe": "CrepeF0Predictor", "rmvpe": "RMVPEF0Predictor", "fcpe": "FCPEF0Predictor"}
F0_PREDICTORS: tuple[str, ...] = tuple(_CLASSES)
_NEURAL = ("crepe", "rmvpe", "fcpe")  # these also take device and threshold


def get_f0_predictor(name: str, hop_length: int = 512, sampling_rate: int = 44100, device: str | None = None,
                     threshold: float = 0.05) -> F0Predictor:
    """Build the predictor ``name`` (one of ``F0_PREDICTORS``; ValueError listing them otherwise).

    ``device`` (None: CUDA when available, else CPU) and the voicing ``threshold`` apply to crepe/rmvpe/fcpe.
    """
    if name not in _CLASSES:
        raise ValueError(f"Unknown F0 predictor {name!r}; valid names: {', '.join(sorted(_CLASSES))}")
    cls = getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), _CLASSES[name])
    if name in _NEURAL:
        return cls(hop_length=hop_length, sampling_rate=sampling_rate, device=device, threshold=threshold)
    return cls(hop_length=hop_length, sampling_rate=sampling_rate)


__all__ = ["F0_PREDICTORS", "get_f0_predictor"]
