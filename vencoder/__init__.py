"""Speech ("content") encoder registry, keyed by the exact 4.1 `model.speech_encoder` strings.

Each entry names the adapter class (imported only when that encoder is built), its file under
`pretrain/` (formats.md §12), what the file is (for the missing-file error) and fixed options.
Adding an encoder is one `_ENCODERS` line plus its adapter module.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep `import vencoder` free of torch and model code
    import torch

    from vencoder.encoder import SpeechEncoder

__all__ = ["ENCODER_DIMS", "get_speech_encoder", "speech_encoder_names"]

# Output feature size of every 4.1 encoder name (formats.md §4.3); `model.ssl_dim` must equal it.
ENCODER_DIMS: dict[str, int] = {
    "vec768l12": 768,
    "vec256l9": 256,
    "vec256l9-onnx": 256,
    "vec256l12-onnx": 256,
    "vec768l9-onnx": 768,
    "vec768l12-onnx": 768,
    "hubertsoft": 256,
    "hubertsoft-onnx": 256,
    "whisper-ppg": 1024,
    "whisper-ppg-large": 1280,
    "cnhubertlarge": 1024,
    "dphubert": 768,
    "wavlmbase+": 768,
}


@dataclass(frozen=True)
class _Entry:
    module: str  # adapter module, imported lazily
    cls: str  # SpeechEncoder subclass taking (path, device, what=..., **options)
    file: str  # file name under pretrain_dir
    what: str  # what the file is, for "missing file" errors
    options: dict[str, Any] = field(default_factory=dict)


_CONTENTVEC = "ContentVec model (fairseq checkpoint; RVC's hubert_base.pt renamed also works)"
_ENCODERS: dict[str, _Entry] = {
    "vec768l12": _Entry("vencoder.hubert", "FairseqHubertEncoder", "checkpoint_best_legacy_500.pt", _CONTENTVEC,
                        {"output_layer": 12}),
    "vec256l9": _Entry("vencoder.hubert", "FairseqHubertEncoder", "checkpoint_best_legacy_500.pt", _CONTENTVEC,
                       {"output_layer": 9, "use_final_proj": True}),
    "vec256l9-onnx": _Entry("vencoder.onnx_encoder", "OnnxSpeechEncoder", "vec-256-layer-9.onnx",
                            "ContentVec ONNX export (layer 9 + final_proj, 256 dims)", {"dim": 256}),
    "vec256l12-onnx": _Entry("vencoder.onnx_encoder", "OnnxSpeechEncoder", "vec-256-layer-12.onnx",
                             "ContentVec ONNX export (layer 12 + final_proj, 256 dims)", {"dim": 256}),
    "vec768l9-onnx": _Entry("vencoder.onnx_encoder", "OnnxSpeechEncoder", "vec-768-layer-9.onnx",
                            "ContentVec ONNX export (layer 9, 768 dims)", {"dim": 768}),
    "vec768l12-onnx": _Entry("vencoder.onnx_encoder", "OnnxSpeechEncoder", "vec-768-layer-12.onnx",
                             "ContentVec ONNX export (layer 12, 768 dims)", {"dim": 768}),
    "hubertsoft-onnx": _Entry("vencoder.onnx_encoder", "OnnxSpeechEncoder", "hubert-soft.onnx",
                              "HuBERT-Soft ONNX export (256 dims)", {"dim": 256}),
    "cnhubertlarge": _Entry("vencoder.hubert", "FairseqHubertEncoder", "chinese-hubert-large-fairseq-ckpt.pt",
                            "Chinese HuBERT-large model (fairseq checkpoint)", {"output_layer": None}),
    "hubertsoft": _Entry("vencoder.hubert_soft", "HubertSoftEncoder", "hubert-soft-0d54a1f4.pt",
                         "HuBERT-Soft model (bshall's state dict)"),
    "whisper-ppg": _Entry("vencoder.whisper", "WhisperPPGEncoder", "medium.pt",
                          "OpenAI Whisper medium checkpoint (dims + model_state_dict)"),
    "whisper-ppg-large": _Entry("vencoder.whisper", "WhisperPPGEncoder", "large-v2.pt",
                                "OpenAI Whisper large-v2 checkpoint (dims + model_state_dict)"),
    "wavlmbase+": _Entry("vencoder.wavlm", "WavLMEncoder", "WavLM-Base+.pt", "Microsoft WavLM Base+ checkpoint"),
    "dphubert": _Entry("vencoder.dphubert", "DPHubertEncoder", "DPHuBERT-sp0.75.pth",
                       "DPHuBERT sp0.75 model (pruned HuBERT: config + state_dict)"),
}


def speech_encoder_names() -> list[str]:
    """Names that `get_speech_encoder` can build now (a subset of `ENCODER_DIMS`)."""
    return list(_ENCODERS)


def get_speech_encoder(name: str, device: "str | torch.device | None" = None,
                       pretrain_dir: str | os.PathLike = "pretrain") -> "SpeechEncoder":
    """Build the encoder 4.1 calls `name` from its file in `pretrain_dir`.

    Args:
        name: `model.speech_encoder` value, e.g. "vec768l12".
        device: torch device; None = CUDA if available, else CPU.
        pretrain_dir: folder holding the pretrained files (formats.md §12).
    Returns:
        a SpeechEncoder whose `encoder(wav16k [N] or [N, 2])` returns [1, dim, frames].
    Raises:
        ValueError: unknown name (the message lists the valid ones).
        NotImplementedError: a valid 4.1 name whose encoder is not available yet.
        PretrainNotFoundError: the file is missing (message says which, where, and what for).
        CheckpointError: the file is of the wrong kind or its tensors do not fit.
    """
    entry = _ENCODERS.get(name)
    if entry is None:
        if name in ENCODER_DIMS:
            raise NotImplementedError(f"speech encoder {name!r} is not implemented yet; available: "
                                      f"{', '.join(_ENCODERS)}")
        raise ValueError(f"unknown speech encoder {name!r}; valid names: {', '.join(ENCODER_DIMS)}")
    adapter = getattr(importlib.import_module(entry.module), entry.cls)
    path = os.path.join(os.fspath(pretrain_dir), entry.file)
    return adapter(path, device, what=f"{entry.what}, needed by speech encoder {name}", **entry.options)
