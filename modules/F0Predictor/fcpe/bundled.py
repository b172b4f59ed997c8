"""torchfcpe's bundled FCPE model (``fcpe_c_v001.pt``, a conv-only ``CFNaiveMelPE``) on our own network code.

The weights ship inside the ``torchfcpe`` package (``pip install --no-deps torchfcpe==0.0.4``), which is
located with ``importlib.util.find_spec`` and never imported (its code imports torchaudio). Front end
and decoding are those of the 4.1 FCPE (:class:`FCPERunner`).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from core.checkpoint import CheckpointError, CheckpointNotFoundError, load_state_dict_strict, package_file, safe_torch_load
from modules.F0Predictor.fcpe.inference import DEFAULT_PATH, FCPEConfig, FCPERunner
from modules.F0Predictor.fcpe.model import ConformerConvModule, WNLinear

PACKAGE = "torchfcpe"
PACKAGE_PIN = "torchfcpe==0.0.4"
WEIGHTS_FILE = os.path.join("assets", "fcpe_c_v001.pt")
INSTALL_HINT = f"pip install --no-deps {PACKAGE_PIN}"


def bundled_weights_path() -> str | None:
    """Path of ``torchfcpe/assets/fcpe_c_v001.pt`` in the installed package, or None.

    Only the package's location is looked up; its ``__init__`` (which imports torchaudio) never runs.
    """
    return package_file(PACKAGE, WEIGHTS_FILE)


def missing_weights_message() -> str:
    """Error text for ``--f0_predictor fcpe`` when neither weight source is there."""
    return (
        f"F0 predictor 'fcpe' needs {DEFAULT_PATH} (relative to the working directory {os.getcwd()}), "
        f"a so-vits-svc 4.1 FCPE checkpoint, or else the weights bundled with the {PACKAGE} package "
        f"({PACKAGE}/{WEIGHTS_FILE.replace(os.sep, '/')}), not found: the package is not installed "
        "(or lacks that file). Install it with "
        f"`{INSTALL_HINT}` (only its weight file is used; --no-deps keeps torchaudio out), or "
        "`pip install --no-deps -r requirements-weights.txt`"
    )


class ConvEncoderLayer(nn.Module):
    """x + conformer convolution(x): [B, T, dim] -> [B, T, dim].

    ``norm`` is the pre-attention LayerNorm of the attention variant; the conv-only model stores it
    but never uses it, so it exists here only to load the checkpoint strictly.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conformer = ConformerConvModule(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conformer(x)


class ConvEncoder(nn.Module):
    """Stack of :class:`ConvEncoderLayer` (``encoder_layers.N`` in the checkpoint)."""

    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__()
        self.encoder_layers = nn.ModuleList([ConvEncoderLayer(dim) for _ in range(num_layers)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.encoder_layers:
            x = layer(x)
        return x


class CFNaiveMelPE(nn.Module):
    """Conv-only FCPE salience network: mel [B, T, input_channels] -> salience [B, T, out_dims].

    ``cent_table`` [out_dims] (bin pitches in cents re 10 Hz) and ``gaussian_blurred_cent_mask`` (a
    training-only scalar) are checkpoint buffers; both are overwritten on load.
    """

    def __init__(self, input_channels: int = 128, out_dims: int = 360, hidden_dims: int = 512,
                 n_layers: int = 6) -> None:
        super().__init__()
        self.register_buffer("cent_table", torch.zeros(out_dims))
        self.register_buffer("gaussian_blurred_cent_mask", torch.zeros(()))
        self.input_stack = nn.Sequential(
            nn.Conv1d(input_channels, hidden_dims, 3, 1, 1),
            nn.GroupNorm(4, hidden_dims),
            nn.LeakyReLU(),
            nn.Conv1d(hidden_dims, hidden_dims, 3, 1, 1),
        )
        self.net = ConvEncoder(n_layers, hidden_dims)
        self.norm = nn.LayerNorm(hidden_dims)
        self.output_proj = WNLinear(hidden_dims, out_dims)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.input_stack(mel.transpose(1, 2)).transpose(1, 2)
        x = self.norm(self.net(x))
        return torch.sigmoid(self.output_proj(x))


def bundled_config(config: Any, source: str) -> FCPEConfig:
    """Read a torchfcpe ``config_dict`` (``mel``: sr, num_mels, ...; ``model``: hidden_dims, ...).

    Raises:
        CheckpointError: missing keys, or a model variant this network does not implement
            (attention layers, harmonic embedding, another model type).
    """
    sections: dict[str, Mapping[str, Any]] = {}
    for name in ("mel", "model"):
        part = config.get(name) if isinstance(config, Mapping) else None
        if not isinstance(part, Mapping):
            raise CheckpointError(f"{source}: config_dict has no '{name}' section (not a torchfcpe model)")
        sections[name] = part
    mel, model = sections["mel"], sections["model"]
    if model.get("type") != "CFNaiveMelPE" or not model.get("conv_only") or model.get("use_harmonic_emb"):
        raise CheckpointError(
            f"{source}: only the conv-only CFNaiveMelPE without harmonic embedding is supported "
            f"(type={model.get('type')!r}, conv_only={model.get('conv_only')!r}, "
            f"use_harmonic_emb={model.get('use_harmonic_emb')!r})"
        )
    if mel.get("type") not in (None, "default", "none"):
        raise CheckpointError(f"{source}: mel type {mel.get('type')!r} is not supported")
    names = {
        "sampling_rate": ("mel", "sr"), "num_mels": ("mel", "num_mels"), "n_fft": ("mel", "n_fft"),
        "win_size": ("mel", "win_size"), "hop_size": ("mel", "hop_size"), "fmin": ("mel", "fmin"),
        "fmax": ("mel", "fmax"), "input_channel": ("mel", "num_mels"), "out_dims": ("model", "out_dims"),
        "n_layers": ("model", "n_layers"), "n_chans": ("model", "hidden_dims"),
        "f0_max": ("model", "f0_max"), "f0_min": ("model", "f0_min"),
    }
    values: dict[str, Any] = {}
    for field, (section, key) in names.items():
        value = sections[section].get(key)
        if value is None:
            raise CheckpointError(f"{source}: config_dict.{section}.{key} is missing")
        values[field] = value
    return FCPEConfig(**values)


def load_bundled_fcpe(
    weights_path: str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> tuple[CFNaiveMelPE, FCPEConfig]:
    """Build the bundled network from its ``config_dict`` and load ``model`` strictly.

    Args:
        weights_path: a torchfcpe ``{'config_dict', 'model', ...}`` file; None = the installed
            package's ``fcpe_c_v001.pt``.
        device: torch device.

    Raises:
        CheckpointNotFoundError: no weights (the message says how to install them).
        CheckpointError: unreadable file, unsupported config, or keys/shapes that do not fit.
    """
    path = bundled_weights_path() if weights_path is None else os.fspath(weights_path)
    if path is None or not os.path.isfile(path):
        raise CheckpointNotFoundError(missing_weights_message())
    ckpt = safe_torch_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(
            f"{path}: expected a torchfcpe model {{'config_dict': ..., 'model': state_dict}}"
        )
    config = bundled_config(ckpt.get("config_dict"), path)
    model = CFNaiveMelPE(config.input_channel, config.out_dims, config.n_chans, config.n_layers)
    load_state_dict_strict(model, ckpt["model"], source=path)
    return model.eval().to(device), config


class BundledFCPEInfer(FCPERunner):
    """FCPE pitch estimator on torchfcpe's bundled model: audio -> F0 per 10 ms mel frame.

    Args:
        weights_path: see :func:`load_bundled_fcpe` (None = the installed package's file).
        device: torch device for the network and front end.

    Raises:
        CheckpointNotFoundError, CheckpointError: as :func:`load_bundled_fcpe`.
    """

    def __init__(
        self, weights_path: str | os.PathLike | None = None, device: torch.device | str = "cpu"
    ) -> None:
        path = bundled_weights_path() if weights_path is None else os.fspath(weights_path)
        model, config = load_bundled_fcpe(path, device)
        super().__init__(model, config, device)
        self.weights_path = path
