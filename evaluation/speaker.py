"""Speaker embeddings from Resemblyzer's pretrained GE2E speaker encoder, run on our own network code.

The weights are `pretrained.pt` inside the `resemblyzer` package (`pip install --no-deps resemblyzer==0.1.4`),
located without importing the package (its code needs webrtcvad). Front end, as the package computes it:
16 kHz audio, volume raised (never lowered) to -30 dBFS, long pauses removed, a 40-band power mel (25 ms Hann
window, 10 ms hop, frames centred on zero-padded audio). Network: 3-layer LSTM (256) -> linear 256 -> ReLU ->
L2 norm, run on partials of 160 frames (1.6 s) taken every 77 frames (1.3 partials a second, the package's
default); the utterance embedding is the L2-normed mean of its partials' embeddings.

One difference: the package finds pauses with the webrtcvad voice detector; here a 30 ms window counts as
voice when its energy is within SILENCE_DB of the loudest window's, with the same smoothing and widening.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from torch import nn

from core.checkpoint import CheckpointError, CheckpointNotFoundError, load_state_dict_strict, package_file, safe_torch_load
from core.device import resolve_device
from modules.audio_io import resample_audio
from modules.mel_processing import mel_filterbank, stft_magnitude

__all__ = ["INSTALL_HINT", "SpeakerEncoder", "cosine", "optional_speaker_encoder", "partial_starts", "speaker_mel",
           "trim_pauses"]

PACKAGE_PIN = "resemblyzer==0.1.4"
INSTALL_HINT = f"pip install --no-deps {PACKAGE_PIN}"
RATE, N_FFT, HOP, N_MELS = 16000, 400, 160, 40
PARTIAL, STEP, MIN_COVERAGE = 160, 77, 0.75  # STEP = round(RATE / 1.3 / HOP)
TARGET_DBFS = -30.0
VAD_WINDOW, VAD_SMOOTH, VAD_WIDEN = 480, 8, 7  # 30 ms windows; moving average of 8; keep 6 windows around voice
SILENCE_DB = 40.0


def weights_path() -> str:
    """`resemblyzer/pretrained.pt` of the installed package (found, not imported); CheckpointNotFoundError
    saying how to install it otherwise."""
    path = package_file("resemblyzer", "pretrained.pt")
    if path is not None:
        return path
    raise CheckpointNotFoundError(f"the speaker encoder's weights (resemblyzer/pretrained.pt) are not installed: "
                                  f"{INSTALL_HINT}")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def trim_pauses(wav: np.ndarray) -> np.ndarray:
    """16 kHz audio without its long pauses: windows of 30 ms whose energy is within SILENCE_DB of the
    loudest window's count as voice; the flags are smoothed (moving average of 8, rounded) and widened by 3
    windows on each side; the rest is cut out (and the tail that does not fill a window)."""
    n = len(wav) // VAD_WINDOW
    if n == 0:
        return wav
    energy = 10 * np.log10(np.mean(wav[:n * VAD_WINDOW].reshape(n, VAD_WINDOW) ** 2, axis=1) + 1e-12)
    voice = (energy > energy.max() - SILENCE_DB).astype(np.float64)
    padded = np.concatenate([np.zeros((VAD_SMOOTH - 1) // 2), voice, np.zeros(VAD_SMOOTH // 2)])
    smooth = np.convolve(padded, np.ones(VAD_SMOOTH) / VAD_SMOOTH, mode="valid")
    keep = binary_dilation(np.round(smooth).astype(bool), np.ones(VAD_WIDEN, dtype=bool))
    return wav[:n * VAD_WINDOW][np.repeat(keep, VAD_WINDOW)]


def speaker_mel(wav: np.ndarray) -> np.ndarray:
    """Power mel [frames, 40] of 16 kHz audio [N], frames = N // 160 + 1 (librosa's melspectrogram defaults)."""
    y = torch.from_numpy(np.asarray(wav, dtype=np.float32))[None]
    power = stft_magnitude(y, N_FFT, HOP, N_FFT, N_FFT // 2, N_FFT // 2, "constant", eps=0.0)[0] ** 2
    return (mel_filterbank(RATE, N_FFT, N_MELS, 0.0, None) @ power).T.numpy()


def partial_starts(n_samples: int) -> list[int]:
    """First mel frame of each 160-frame partial of an N-sample utterance: every 77 frames while a partial
    fits the frames plus one step; the last one is dropped when it covers less than 75 % real audio."""
    n_frames = math.ceil((n_samples + 1) / HOP)
    starts = list(range(0, max(1, n_frames - PARTIAL + STEP + 1), STEP))
    if len(starts) > 1 and (n_samples - starts[-1] * HOP) / (PARTIAL * HOP) < MIN_COVERAGE:
        starts.pop()
    return starts


class SpeakerEncoder(nn.Module):
    """GE2E speaker encoder: `embed(audio, rate)` -> unit-length float32 [256]. Raises CheckpointNotFoundError
    (package missing, says how to install) or CheckpointError (unusable file)."""

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        path = weights_path()
        state = safe_torch_load(path).get("model_state", {})
        # similarity_weight / similarity_bias scale the training loss only.
        load_state_dict_strict(self, {k: v for k, v in state.items() if not k.startswith("similarity_")}, path)
        self.device = resolve_device(device)
        self.to(self.device).eval()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels [B, 160, 40] -> L2-normed embeddings [B, 256]."""
        _, (hidden, _) = self.lstm(mels)
        return nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=1)

    @torch.no_grad()
    def embed(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """Utterance embedding [256] of mono audio at `rate`."""
        wav = resample_audio(np.asarray(audio, dtype=np.float32), rate, RATE).astype(np.float64)
        rms = np.sqrt(np.mean(wav ** 2)) + 1e-12
        wav = wav * max(1.0, 10 ** (TARGET_DBFS / 20) / rms)
        wav = trim_pauses(wav)
        starts = partial_starts(len(wav))
        wav = np.pad(wav, (0, max(0, (starts[-1] + PARTIAL) * HOP - len(wav))))
        mel = speaker_mel(wav)
        mels = torch.from_numpy(np.stack([mel[s:s + PARTIAL] for s in starts])).to(self.device)
        mean = self(mels).mean(0)
        return (mean / mean.norm()).cpu().numpy()

    def embed_speaker(self, clips: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
        """Speaker embedding [256]: the L2-normed mean of the clips' utterance embeddings."""
        mean = np.mean([self.embed(audio, rate) for audio, rate in clips], axis=0)
        return mean / np.linalg.norm(mean)


def optional_speaker_encoder(device: str | torch.device | None, skipped: dict[str, str]) -> SpeakerEncoder | None:
    """The encoder, or None with the one-line reason under skipped["speaker_similarity"]."""
    try:
        return SpeakerEncoder(device)
    except CheckpointError as err:
        skipped["speaker_similarity"] = f"speaker similarity skipped: {err}"
        return None
