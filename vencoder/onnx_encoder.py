"""The `*-onnx` speech encoders: a complete encoder graph run by ONNX Runtime.

The graph takes "source" float32 [1, 1, N] and gives "embed" [1, Tu, C] (the MoeVoiceStudio exports
4.1 points to); padding (hubertsoft) and layer choice live inside it, so this adapter only feeds the
first input and transposes the first output.
"""
from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any, Sequence

import numpy as np
import torch

from core.checkpoint import CheckpointError
from vencoder.encoder import SpeechEncoder, require_pretrain

__all__ = ["OnnxSpeechEncoder", "onnx_providers"]

PathLike = str | os.PathLike
Provider = str | tuple[str, dict[str, Any]]

_log = logging.getLogger(__name__)
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
# ONNX Runtime element types we accept for the features; anything else is cast-unsafe or not audio.
_FLOAT_OUT = ("tensor(float)", "tensor(float16)", "tensor(double)")


def _import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("the *-onnx speech encoders need ONNX Runtime: `pip install onnxruntime` "
                          "(or `onnxruntime-gpu` to run them on CUDA)") from err
    return onnxruntime


def onnx_providers(device: torch.device, available: Sequence[str]) -> list[Provider]:
    """ONNX Runtime execution providers for `device`: CUDA (on the device's index) with CPU as fallback
    when `device` is CUDA and the installed runtime has the CUDA provider; otherwise CPU only.

    Args:
        device: where the caller wants the encoder to run.
        available: `onnxruntime.get_available_providers()`.
    """
    if device.type == "cuda" and _CUDA in available:
        return [(_CUDA, {"device_id": device.index or 0}), _CPU]
    return [_CPU]


def _is_one_or_dynamic(d: Any) -> bool:
    # Exported files name dynamic axes with strings (or leave them None); only a fixed 1 is valid here.
    return not isinstance(d, int) or d == 1


def _check_signature(session: Any, name: str, what: str, dim: int) -> None:
    """Raise CheckpointError unless the graph takes float32 [1, 1, N] and gives [1, T, dim]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if not inputs or not outputs:
        raise CheckpointError(f"{name} (the {what}) has {len(inputs)} inputs and {len(outputs)} outputs; "
                              "a speech encoder has one waveform input and a feature output")
    problems = []
    if len(inputs) > 1:  # only the first input is fed, as 4.1 does
        problems.append(f"it has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}) but only the "
                        "waveform is fed")
    first = inputs[0]
    shape = list(first.shape or [])
    if first.type != "tensor(float)":
        problems.append(f"input {first.name!r} is {first.type}, expected tensor(float)")
    if len(shape) != 3 or not (_is_one_or_dynamic(shape[0]) and _is_one_or_dynamic(shape[1])):
        problems.append(f"input {first.name!r} has shape {shape}, expected [1, 1, samples]")
    elif isinstance(shape[2], int):
        problems.append(f"input {first.name!r} has a fixed length of {shape[2]} samples; the time axis must "
                        "be dynamic")
    out = outputs[0]
    out_shape = list(out.shape or [])
    if out.type not in _FLOAT_OUT:
        problems.append(f"output {out.name!r} is {out.type}, expected float features")
    if len(out_shape) != 3 or not _is_one_or_dynamic(out_shape[0]):
        problems.append(f"output {out.name!r} has shape {out_shape}, expected [1, frames, {dim}]")
    if problems:
        raise CheckpointError(f"{name} (the {what}) does not look like a speech encoder: "
                              + "; ".join(problems))
    if isinstance(out_shape[2], int) and out_shape[2] != dim:
        raise CheckpointError(f"{name} (the {what}) outputs {out_shape[2]} features per frame, but this encoder "
                              f"must give {dim}; the file belongs to another encoder (check the file name)")


class OnnxSpeechEncoder(SpeechEncoder):
    """A speech encoder stored as an ONNX graph (the five `*-onnx` names).

    Args:
        path: the file, e.g. `pretrain/vec-768-layer-12.onnx`.
        device: torch device; None = CUDA if available, else CPU. CUDA runs the graph with ONNX Runtime's
            CUDA provider when installed (`onnxruntime-gpu`), otherwise on CPU; the output is returned on
            `device` either way.
        dim: feature size the encoder name promises (256 or 768); a file giving another size is rejected.
        what: description used in errors about the file.
    Raises:
        PretrainNotFoundError: the file is missing.
        CheckpointError: not an ONNX model, or its input/output are not float32 [1, 1, N] -> [1, T, dim].
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, path: PathLike, device: str | torch.device | None = None, dim: int = 768,
                 what: str = "ONNX speech encoder") -> None:
        super().__init__(device)
        name = require_pretrain(path, what)
        ort = _import_onnxruntime()
        available = ort.get_available_providers()
        providers = onnx_providers(self.device, available)
        if self.device.type == "cuda" and _CUDA not in available:
            _log.warning("onnxruntime %s has no CUDA provider (install onnxruntime-gpu); running %s on CPU",
                         ort.__version__, name)
        try:
            self.session = ort.InferenceSession(name, providers=providers)
        except Exception as err:  # ONNX Runtime's error classes live in a private module
            raise CheckpointError(f"{name} (the {what}) cannot be loaded as an ONNX model: {err}") from err
        _check_signature(self.session, name, what, dim)
        self.path = name
        self.what = what
        self.dim = dim
        self.input_name: str = self.session.get_inputs()[0].name

    @torch.inference_mode()
    def encoder(self, wav: torch.Tensor) -> torch.Tensor:
        """[N] or [N, 2] 16 kHz -> [1, dim, frames] float32 on `self.device`; frames are set by the graph
        (floor((N - 400) / 320) + 1 for the ContentVec exports)."""
        x = self.to_mono(wav).detach().cpu().numpy().reshape(1, 1, -1)
        try:
            out = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
        except Exception as err:  # same private error classes as above
            raise RuntimeError(f"{self.path} failed on {x.shape[-1]} samples of 16 kHz audio (too short?): "
                               f"{err}") from err
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[2] != self.dim:
            raise CheckpointError(f"{self.path} (the {self.what}) returned features of shape {list(out.shape)}, "
                                  f"expected [1, frames, {self.dim}]")
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).transpose(1, 2).contiguous().to(self.device)
