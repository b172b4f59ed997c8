"""`whisper-ppg` / `whisper-ppg-large`: the audio encoder of OpenAI Whisper used as a content encoder.

Encoder only (no decoder, tokenizer or `openai-whisper` package), read from OpenAI's `{"dims",
"model_state_dict"}` file; its fp16 `encoder.*` tensors are copied into a float32 network, as 4.1 does.
Per 30-s window: pad or cut to 480,000 samples, log-mel, two convs (stride 1, 2) -> 1500 frames,
positional table, pre-LN blocks, `ln_post`; the first `n // 320` frames are kept. Longer input
(`long_input`): "chunk" encodes consecutive windows and concatenates them, "trim" keeps the first
window only (4.1's output), "refuse" raises.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import CheckpointError, load_state_dict_strict, safe_torch_load_sections
from modules.mel_processing import mel_filterbank, stft_magnitude
from vencoder.encoder import SpeechEncoder, require_pretrain

__all__ = ["CHUNK_SAMPLES", "HOP_SAMPLES", "WhisperAudioEncoder", "WhisperDims", "WhisperPPGEncoder",
           "load_whisper_encoder", "log_mel_spectrogram"]

PathLike = str | os.PathLike
LongInput = Literal["chunk", "refuse", "trim"]

SAMPLE_RATE = 16000
N_FFT = 400
MEL_HOP = 160
CHUNK_SAMPLES = 480_000  # Whisper's fixed 30-second input window
HOP_SAMPLES = 2 * MEL_HOP  # one encoder frame per 320 samples (conv2 has stride 2)
CHUNK_FRAMES = CHUNK_SAMPLES // HOP_SAMPLES  # 1500 = n_audio_ctx of every released model
_LONG_INPUTS = ("chunk", "refuse", "trim")


def log_mel_spectrogram(wav: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's normalised log-mel of whole windows.

    Args:
        wav: [B, N] 16 kHz audio, already padded / cut to the window (480,000 samples for the encoder).
        n_mels: mel bins (80 for medium / large-v2).
    Returns:
        [B, n_mels, N // 160]; each item is floored at its own maximum - 8 (log10 units).
    """
    # Centred STFT (reflect padding) gives N // 160 + 1 frames; Whisper drops the last one.
    power = stft_magnitude(wav, N_FFT, MEL_HOP, N_FFT, 0, 0, eps=0.0, center=True)[..., :-1].square()
    basis = mel_filterbank(SAMPLE_RATE, N_FFT, n_mels, 0.0, None, power.dtype, power.device)
    log_spec = torch.clamp(basis @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return (log_spec + 4.0) / 4.0


@dataclass(frozen=True)
class WhisperDims:
    """The audio half of OpenAI's `ModelDimensions` (text fields of the file are ignored)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int

    @classmethod
    def from_dict(cls, dims: Mapping[str, Any], name: str = "checkpoint") -> "WhisperDims":
        """Pick the audio fields of `checkpoint["dims"]`; CheckpointError naming `name` if one is absent."""
        wanted = [f.name for f in fields(cls)]
        missing = [k for k in wanted if not isinstance(dims.get(k), int)]
        if missing:
            raise CheckpointError(f"{name}: Whisper 'dims' lacks integer {', '.join(missing)} (has {sorted(dims)})")
        return cls(**{k: dims[k] for k in wanted})


class _Attention(nn.Module):
    """Whisper self-attention: `key` has no bias; q and k are each scaled by head_dim^-0.25."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"n_audio_state {dim} is not divisible by n_audio_head {heads}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, D]."""
        b, t, d = x.shape
        scale = (d // self.heads) ** -0.25

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, -1).transpose(1, 2)  # [B, H, T, hd]

        q, k, v = split(self.query(x) * scale), split(self.key(x) * scale), split(self.value(x))
        attn = torch.softmax((q @ k.transpose(-2, -1)).float(), dim=-1).to(q.dtype)
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    """Pre-LN block `x += attn(attn_ln(x))`, `x += mlp(mlp_ln(x))` (keys attn, attn_ln, mlp.{0,2}, mlp_ln)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads)
        self.attn_ln = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, D]."""
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperAudioEncoder(nn.Module):
    """OpenAI's `AudioEncoder`; state-dict keys are those of `model_state_dict` without `encoder.`."""

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_audio_state
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        # Loaded from the file (a sinusoid table rounded to fp16), not recomputed.
        self.register_buffer("positional_embedding", torch.zeros(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList(_Block(d, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, 2 * n_audio_ctx] log-mel -> [B, n_audio_ctx, D]."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        if x.shape[1] != self.positional_embedding.shape[0]:
            raise ValueError(f"Whisper encoder needs {2 * self.positional_embedding.shape[0]} mel frames, "
                             f"got {mel.shape[-1]}")
        x = x + self.positional_embedding
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


def load_whisper_encoder(path: PathLike) -> WhisperAudioEncoder:
    """Build a float32 WhisperAudioEncoder (CPU, eval mode) from an OpenAI Whisper checkpoint.

    Raises:
        CheckpointError: not a Whisper checkpoint, unusable dims, or `encoder.*` tensors that do not fit
            the dims (missing / unexpected / mis-shaped keys are listed). Decoder tensors are ignored.
    """
    name = os.fspath(path)
    # OpenAI's files hold only dicts, ints and tensors.
    ckpt = safe_torch_load_sections(name, "an OpenAI Whisper checkpoint", ("dims", "model_state_dict"),
                                    example="medium.pt / large-v2.pt")
    dims = WhisperDims.from_dict(ckpt["dims"], name)
    if dims.n_audio_ctx != CHUNK_FRAMES:
        raise CheckpointError(f"{name}: n_audio_ctx is {dims.n_audio_ctx}; whisper-ppg needs the released "
                              f"models' {CHUNK_FRAMES} frames (30 s)")
    state = {k[len("encoder."):]: v for k, v in ckpt["model_state_dict"].items() if k.startswith("encoder.")}
    try:
        model = WhisperAudioEncoder(dims)
    except ValueError as err:
        raise CheckpointError(f"{name}: unusable Whisper dims ({err})") from None
    # load_state_dict copies the fp16 tensors into the float32 parameters.
    load_state_dict_strict(model, state, source=f"{name} (Whisper audio encoder, 'encoder.' keys)")
    return model.eval()


class WhisperPPGEncoder(SpeechEncoder):
    """`whisper-ppg` (medium.pt, dim 1024) / `whisper-ppg-large` (large-v2.pt, dim 1280).

    Args:
        path: the OpenAI checkpoint, e.g. `pretrain/medium.pt`.
        device: torch device; None = CUDA if available, else CPU.
        long_input: what to do with more than 30 s (module docstring): "chunk" (default), "refuse", "trim".
        what: description used when the file is missing.
    """

    def __init__(self, path: PathLike, device: str | torch.device | None = None, long_input: LongInput = "chunk",
                 what: str = "OpenAI Whisper checkpoint") -> None:
        super().__init__(device)
        if long_input not in _LONG_INPUTS:
            raise ValueError(f"long_input must be one of {', '.join(_LONG_INPUTS)}, got {long_input!r}")
        model = load_whisper_encoder(require_pretrain(path, what))
        self.model = model.to(self.device)
        self.long_input = long_input
        self.dim = model.dims.n_audio_state

    @torch.inference_mode()
    def encode_window(self, wav: torch.Tensor) -> torch.Tensor:
        """One window of at most 30 s: [n] -> [1, n // 320, D] (4.1's whole computation)."""
        n = wav.shape[0]
        if n > CHUNK_SAMPLES:
            raise ValueError(f"a Whisper window holds at most {CHUNK_SAMPLES} samples, got {n}")
        padded = F.pad(wav.to(self.device), (0, CHUNK_SAMPLES - n))[None]
        return self.model(log_mel_spectrogram(padded, self.model.dims.n_mels))[:, : n // HOP_SAMPLES]

    @torch.inference_mode()
    def encoder(self, wav: torch.Tensor) -> torch.Tensor:
        """[N] or [N, 2] 16 kHz -> [1, dim, N // 320] float32 (N >= 320; 1500 frames with "trim" past 30 s).

        Raises:
            ValueError: fewer than 320 samples, or more than 30 s with long_input="refuse".
        """
        x = self.to_mono(wav)
        n = x.shape[0]
        if n < HOP_SAMPLES:
            raise ValueError(f"audio too short for whisper-ppg: {n} samples at 16 kHz, need >= {HOP_SAMPLES}")
        if n > CHUNK_SAMPLES:
            if self.long_input == "refuse":
                raise ValueError(
                    f"whisper-ppg encodes at most 30 s per slice, got {n / SAMPLE_RATE:.1f} s. At inference use "
                    "forced slicing, e.g. `-cl 25 -lg 1`; for training split clips below 30 s.")
            if self.long_input == "trim":
                x = x[:CHUNK_SAMPLES]
        # Windows start at multiples of 1500 frames; a tail shorter than one frame yields none (N // 320).
        windows = [x[s:s + CHUNK_SAMPLES] for s in range(0, x.shape[0], CHUNK_SAMPLES)]
        units = torch.cat([self.encode_window(w) for w in windows if w.shape[0] >= HOP_SAMPLES], dim=1)
        return units.transpose(1, 2).float()
