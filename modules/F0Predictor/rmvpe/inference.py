"""RMVPE inference: 16 kHz log-mel front end, network, local-average decoding."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.audio_resample import resample
from core.checkpoint import CheckpointError, CheckpointNotFoundError, load_state_dict_strict, safe_torch_load
from modules.F0Predictor.rmvpe.model import E2E0, N_CLASS, N_MELS
from modules.F0Predictor.salience import cents_to_hz, local_average
from modules.mel_processing import dynamic_range_compression, mel_filterbank, stft_magnitude

SAMPLE_RATE = 16000
HOP_LENGTH = 160
N_FFT = 1024
MEL_FMIN = 30
MEL_FMAX = 8000
# Zero crossings of the 4.1 resampler in front of RMVPE (torchaudio Resample(..., lowpass_filter_width=128)).
RESAMPLE_WIDTH = 128
# Pitch of bin 0 in cents relative to 10 Hz; bins are 20 cents apart.
CENTS_OFFSET = 1997.3794084376191
# The U-Net halves the frame axis five times.
FRAME_MULTIPLE = 32
DEFAULT_PATH = os.path.join("pretrain", "rmvpe.pt")


def rmvpe_mel(audio: Tensor) -> Tensor:
    """Log-mel of 16 kHz audio as RMVPE was trained on (HTK mel scale, centred STFT).

    Args:
        audio: [B, N] at 16 kHz.

    Returns:
        [B, 128, 1 + N // 160]: ln(max(mel, 1e-5)) of the plain magnitude (no epsilon), 30-8000 Hz.
    """
    magnitude = stft_magnitude(audio, N_FFT, HOP_LENGTH, N_FFT, 0, 0, "reflect", 0.0, center=True)
    basis = mel_filterbank(
        SAMPLE_RATE, N_FFT, N_MELS, MEL_FMIN, MEL_FMAX, magnitude.dtype, magnitude.device, htk=True
    )
    return dynamic_range_compression(torch.matmul(basis, magnitude))


def bin_cents(device: torch.device | str = "cpu") -> Tensor:
    """Pitch of each of the 360 salience bins in cents: 20 * k + 1997.379... ([360], float32).

    Computed in float32 like 4.1, whose decoded F0 this reproduces to the last bit on most frames.
    """
    return 20 * torch.arange(N_CLASS, dtype=torch.float32, device=device) + CENTS_OFFSET


def load_rmvpe(model_path: str | os.PathLike = DEFAULT_PATH, device: torch.device | str = "cpu") -> E2E0:
    """Build ``E2E0(4, 1, (2, 2))`` and load ``{'model': state_dict}`` from ``model_path`` strictly.

    Raises:
        CheckpointNotFoundError: no file (the message says where it comes from).
        CheckpointError: unreadable file, no ``'model'`` entry, or keys/shapes that do not fit.
    """
    path = os.fspath(model_path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(
            f"F0 predictor 'rmvpe' needs {path} (relative to the working directory {os.getcwd()}): "
            "the RMVPE pitch-model weights, from rmvpe.zip (rename model.pt -> rmvpe.pt). Or use "
            "--f0_predictor fcpe, which works offline (the FCPE weights bundled with the torchfcpe "
            "package: pip install --no-deps torchfcpe==0.0.4), or pm/dio/harvest (no weights at all)"
        )
    ckpt = safe_torch_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: expected an RMVPE checkpoint {{'model': state_dict}}")
    # Built without initialisation (92 M values): every parameter and buffer comes from the file.
    with torch.device("meta"):
        model = E2E0(4, 1, (2, 2))
    model = model.to_empty(device="cpu")
    load_state_dict_strict(model, ckpt["model"], source=path)
    return model.eval().to(device)


class RMVPE:
    """RMVPE pitch estimator: audio -> per-10-ms F0.

    Args:
        model_path: ``{'model': state_dict}`` checkpoint.
        device: torch device for the network and front end.
    """

    def __init__(
        self, model_path: str | os.PathLike = DEFAULT_PATH, device: torch.device | str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.model = load_rmvpe(model_path, self.device)
        self.cents = bin_cents(self.device)

    @torch.no_grad()
    def mel2hidden(self, mel: Tensor) -> Tensor:
        """Network salience for a log-mel [B, 128, M] -> [B, M, 360].

        The frame axis is padded with zeros (not the log floor, as 4.1 did) to a multiple of 32 and
        the output cut back to M frames.
        """
        n_frames = mel.shape[-1]
        pad = FRAME_MULTIPLE * ((n_frames - 1) // FRAME_MULTIPLE + 1) - n_frames
        mel = F.pad(mel, (0, pad), mode="constant")
        return self.model(mel)[:, :n_frames]

    def decode(self, hidden: Tensor, threshold: float = 0.03) -> Tensor:
        """Salience [M, 360] -> F0 [M] in Hz (float32), 0 where the peak salience <= threshold."""
        cents, peak = local_average(hidden.float(), self.cents, edge="zero")
        f0 = cents_to_hz(cents)
        return torch.where(peak > threshold, f0, torch.zeros_like(f0))

    @torch.no_grad()
    def infer_from_audio(
        self, audio: Tensor, sample_rate: int = SAMPLE_RATE, threshold: float = 0.03
    ) -> Tensor:
        """F0 of mono audio.

        Args:
            audio: [N] float at ``sample_rate``.
            sample_rate: input rate; anything but 16 kHz is resampled (128 zero crossings).
            threshold: peak-salience voicing threshold (4.1 passes its predictor threshold, 0.05).

        Returns:
            F0 [1 + N16 // 160] in Hz, float32, 0 = unvoiced; N16 = ceil(N * 16000 / sample_rate).
        """
        audio = audio.to(self.device, torch.float32)[None]
        audio = resample(audio, sample_rate, SAMPLE_RATE, lowpass_filter_width=RESAMPLE_WIDTH)
        hidden = self.mel2hidden(rmvpe_mel(audio))
        return self.decode(hidden[0], threshold)
