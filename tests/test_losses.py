"""modules/losses.py against the 4.1 fixture (losses/)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_fixture
from modules.losses import discriminator_loss, feature_loss, generator_loss, kl_loss

TOL = 1e-5


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return load_fixture("losses")[1]


def _t(arrays: dict[str, np.ndarray], name: str) -> torch.Tensor:
    return torch.from_numpy(arrays[name])


def _close(actual: torch.Tensor | list, expected: np.ndarray) -> None:
    got = np.asarray([float(v) for v in actual]) if isinstance(actual, list) else actual.detach().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL)


def test_kl_loss(arrays: dict[str, np.ndarray]) -> None:
    names = ["z_p", "logs_q", "m_p", "logs_p", "z_mask"]
    out = kl_loss(*[_t(arrays, f"kl_in_{n}") for n in names])
    _close(out, arrays["kl_out"])


def test_discriminator_loss(arrays: dict[str, np.ndarray]) -> None:
    real = [_t(arrays, f"disc_real_{i}") for i in range(3)]
    gen = [_t(arrays, f"disc_gen_{i}") for i in range(3)]
    loss, r_losses, g_losses = discriminator_loss(real, gen)
    _close(loss, arrays["discriminator_loss"])
    _close(r_losses, arrays["discriminator_loss_r"])
    _close(g_losses, arrays["discriminator_loss_g"])


def test_generator_loss(arrays: dict[str, np.ndarray]) -> None:
    gen = [_t(arrays, f"disc_gen_{i}") for i in range(3)]
    loss, per_item = generator_loss(gen)
    _close(loss, arrays["generator_loss"])
    _close(per_item, arrays["generator_loss_list"])


def test_feature_loss(arrays: dict[str, np.ndarray]) -> None:
    fmap_r = [[_t(arrays, f"fmap_real_{i}_{j}") for j in range(2)] for i in range(2)]
    fmap_g = [[_t(arrays, f"fmap_gen_{i}_{j}").requires_grad_() for j in range(2)] for i in range(2)]
    loss = feature_loss(fmap_r, fmap_g)
    _close(loss, arrays["feature_loss"])
    loss.backward()
    assert fmap_g[0][0].grad is not None and fmap_g[0][0].grad.abs().sum() > 0
