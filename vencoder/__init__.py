"""Speech ("content") encoder registry, keyed by the exact 4.1 `model.speech_encoder` strings.

Each entry gives the output width (`model.ssl_dim` must equal it), the adapter class (imported only
when that encoder is built), its file under `pretrain/`, what the file is (for the missing-file error)
and fixed options. Adding an encoder is one `_ENCODERS` line plus its adapter module.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep `import vencoder` free of torch and model code
    import torch

    from vencoder.encoder import SpeechEncoder

__all__ = ["ENCODER_DIMS", "WHISPER_MAX_SECONDS", "encoder_file", "encoders_of_width", "get_speech_encoder",
           "speech_encoder_names"]


@dataclass(frozen=True)
class _Entry:
    width: int  # output feature size
    module: str  # adapter module, imported lazily
    cls: str  # SpeechEncoder subclass taking (path, device, what=..., **options)
    file: str  # file name under pretrain_dir
    what: str  # what the file is, for "missing file" errors
    options: dict[str, Any] = field(default_factory=dict)


def _onnx(width: int, file: str, what: str) -> _Entry:
    return _Entry(width, "vencoder.onnx_encoder", "OnnxSpeechEncoder", file, what, {"dim": width})


_CONTENTVEC = "ContentVec model (fairseq checkpoint; RVC's hubert_base.pt renamed also works)"
_WHISPER = "OpenAI Whisper {} checkpoint (dims + model_state_dict)"
_ENCODERS: dict[str, _Entry] = {
    "vec768l12": _Entry(768, "vencoder.hubert", "FairseqHubertEncoder", "checkpoint_best_legacy_500.pt",
                        _CONTENTVEC, {"output_layer": 12}),
    "vec256l9": _Entry(256, "vencoder.hubert", "FairseqHubertEncoder", "checkpoint_best_legacy_500.pt",
                       _CONTENTVEC, {"output_layer": 9, "use_final_proj": True}),
    "vec256l9-onnx": _onnx(256, "vec-256-layer-9.onnx", "ContentVec ONNX export (layer 9 + final_proj, 256 dims)"),
    "vec256l12-onnx": _onnx(256, "vec-256-layer-12.onnx", "ContentVec ONNX export (layer 12 + final_proj, 256 dims)"),
    "vec768l9-onnx": _onnx(768, "vec-768-layer-9.onnx", "ContentVec ONNX export (layer 9, 768 dims)"),
    "vec768l12-onnx": _onnx(768, "vec-768-layer-12.onnx", "ContentVec ONNX export (layer 12, 768 dims)"),
    "hubertsoft": _Entry(256, "vencoder.hubert_soft", "HubertSoftEncoder", "hubert-soft-0d54a1f4.pt",
                         "HuBERT-Soft model (bshall's state dict)"),
    "hubertsoft-onnx": _onnx(256, "hubert-soft.onnx", "HuBERT-Soft ONNX export (256 dims)"),
    "whisper-ppg": _Entry(1024, "vencoder.whisper", "WhisperPPGEncoder", "medium.pt", _WHISPER.format("medium")),
    "whisper-ppg-large": _Entry(1280, "vencoder.whisper", "WhisperPPGEncoder", "large-v2.pt",
                                _WHISPER.format("large-v2")),
    "cnhubertlarge": _Entry(1024, "vencoder.hubert", "FairseqHubertEncoder", "chinese-hubert-large-fairseq-ckpt.pt",
                            "Chinese HuBERT-large model (fairseq checkpoint)", {"output_layer": None}),
    "dphubert": _Entry(768, "vencoder.dphubert", "DPHubertEncoder", "DPHuBERT-sp0.75.pth",
                       "DPHuBERT sp0.75 model (pruned HuBERT: config + state_dict)"),
    "wavlmbase+": _Entry(768, "vencoder.wavlm", "WavLMEncoder", "WavLM-Base+.pt", "Microsoft WavLM Base+ checkpoint"),
}

# Output feature size of every encoder name.
ENCODER_DIMS: dict[str, int] = {name: entry.width for name, entry in _ENCODERS.items()}
WHISPER_MAX_SECONDS = 30.0  # whisper-ppg encoders read one fixed 30-second window per clip


def speech_encoder_names() -> list[str]:
    """Every name `get_speech_encoder` accepts, in registry order."""
    return list(_ENCODERS)


def encoders_of_width(width: int, onnx: bool = True) -> list[str]:
    """Names of the encoders giving `width`-dim units, in registry order; `onnx=False` leaves out `*-onnx`."""
    return [name for name, entry in _ENCODERS.items()
            if entry.width == width and (onnx or not name.endswith("-onnx"))]


def encoder_file(name: str) -> str:
    """File name under the pretrain folder that encoder `name` reads (KeyError for unknown names)."""
    return _ENCODERS[name].file


def get_speech_encoder(name: str, device: "str | torch.device | None" = None,
                       pretrain_dir: str | os.PathLike = "pretrain") -> "SpeechEncoder":
    """Build the encoder 4.1 calls `name` from its file in `pretrain_dir`.

    Args:
        name: `model.speech_encoder` value, e.g. "vec768l12".
        device: torch device; None / "auto" = CUDA if available, else CPU.
        pretrain_dir: folder holding the pretrained files.
    Returns:
        a SpeechEncoder whose `encoder(wav16k [N] or [N, 2])` returns [1, dim, frames].
    Raises:
        ValueError: unknown name (the message lists the valid ones).
        PretrainNotFoundError: the file is missing (message says which, where, and what for).
        CheckpointError: the file is of the wrong kind or its tensors do not fit.
    """
    entry = _ENCODERS.get(name)
    if entry is None:
        raise ValueError(f"unknown speech encoder {name!r}; valid names: {', '.join(_ENCODERS)}")
    adapter = getattr(importlib.import_module(entry.module), entry.cls)
    path = os.path.join(os.fspath(pretrain_dir), entry.file)
    return adapter(path, device, what=f"{entry.what}, needed by speech encoder {name}", **entry.options)
