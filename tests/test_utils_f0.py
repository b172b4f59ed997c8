"""F0 helpers of utils.py against the 4.1 fixtures in ../shared/fixtures/sovits41/utils."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_fixture
from utils import f0_to_coarse, interpolate_f0, normalize_f0, repeat_expand_2d


@pytest.fixture(scope="module")
def fx() -> tuple[dict, dict[str, np.ndarray]]:
    return load_fixture("utils")


@pytest.mark.parametrize("suffix", ["", "_2d"])
def test_f0_to_coarse_matches_fixture_exactly(fx, suffix: str) -> None:
    _, arrays = fx
    out = f0_to_coarse(torch.from_numpy(arrays[f"f0_to_coarse_in{suffix}"]))
    assert out.dtype == torch.int64
    np.testing.assert_array_equal(out.numpy(), arrays[f"f0_to_coarse_out{suffix}"])


def test_f0_to_coarse_boundaries() -> None:
    f0 = torch.tensor([0.0, 30.0, 50.0, 1100.0, 1103.0, 1103.2, 2000.0])
    # Above ~1103.1 Hz the index wraps to 0 instead of clipping to 255 (4.1 behaviour).
    assert f0_to_coarse(f0).tolist() == [1, 1, 1, 255, 255, 0, 0]


def _lf0(f0_hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f0_hz / 700.0) / 500


def test_normalize_f0_matches_fixture(fx) -> None:
    _, arrays = fx
    lf0 = _lf0(torch.from_numpy(arrays["normalize_f0_in_f0_hz"])[:, None, :])
    np.testing.assert_allclose(lf0.numpy(), arrays["normalize_f0_in_lf0"], rtol=0, atol=1e-6)
    out = normalize_f0(
        torch.from_numpy(arrays["normalize_f0_in_lf0"]),
        torch.from_numpy(arrays["normalize_f0_in_x_mask"]),
        torch.from_numpy(arrays["normalize_f0_in_uv"]),
        random_scale=False,
    )
    np.testing.assert_allclose(out.numpy(), arrays["normalize_f0_out"], rtol=0, atol=1e-6)


def test_normalize_f0_unvoiced_row_and_mask() -> None:
    lf0 = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[5.0, 6.0, 7.0, 8.0]]])
    uv = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]], [[1.0, 1.0, 1.0, 1.0]]])
    out = normalize_f0(lf0, mask, uv, random_scale=False)
    # Row 0: mean over uv frames 0, 1, 3 (the masked frame counts too) = 7/3.
    expected0 = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 7.0 / 3.0) * mask[0, 0]
    torch.testing.assert_close(out[0, 0], expected0)
    # Row 1: no voiced frame -> sum 0 / 9999 = 0, nothing subtracted.
    torch.testing.assert_close(out[1, 0], lf0[1, 0])


def test_normalize_f0_random_scale_draws_like_41() -> None:
    lf0 = torch.randn(3, 1, 10)
    uv = torch.ones(3, 10)
    mask = torch.ones(3, 1, 10)
    torch.manual_seed(7)
    out = normalize_f0(lf0, mask, uv, random_scale=True)
    torch.manual_seed(7)
    factor = torch.empty(3, 1).uniform_(0.8, 1.2)
    plain = normalize_f0(lf0, mask, uv, random_scale=False)
    torch.testing.assert_close(out, plain * factor[:, :, None])
    assert bool(((factor >= 0.8) & (factor <= 1.2)).all())


def test_normalize_f0_nan_raises() -> None:
    lf0 = torch.tensor([[[1.0, float("nan")]], [[1.0, 2.0]]])
    with pytest.raises(ValueError, match=r"items \[0\]"):
        normalize_f0(lf0, torch.ones(2, 1, 2), torch.ones(2, 2), random_scale=False)


def test_repeat_expand_matches_fixture(fx) -> None:
    meta, arrays = fx
    assert len(meta["repeat_expand_cases"]) > 0
    for case in meta["repeat_expand_cases"]:
        i, n = case["index"], case["target_len"]
        content = torch.from_numpy(arrays[f"repeat_expand_{i}_in"])
        assert content.shape == (case["channels"], case["src_len"])
        for mode in ("left", "nearest"):
            out = repeat_expand_2d(content, n, mode)
            assert out.shape == (case["channels"], n)
            np.testing.assert_array_equal(out.numpy(), arrays[f"repeat_expand_{i}_{mode}"])
        out = repeat_expand_2d(content, n, "linear")
        np.testing.assert_allclose(out.numpy(), arrays[f"repeat_expand_{i}_linear"], rtol=0, atol=1e-6)


def test_repeat_expand_left_default_and_shrink() -> None:
    content = torch.arange(6.0).reshape(1, 6)
    assert repeat_expand_2d(content, 4).tolist() == [[0.0, 1.0, 2.0, 3.0]]
    # 3 -> 5: boundaries 0, 5/3, 10/3, 5 -> source columns 0, 0, 1, 1, 2.
    assert repeat_expand_2d(torch.tensor([[1.0, 2.0, 3.0]]), 5).tolist() == [[1, 1, 2, 2, 3]]


def test_interpolate_f0_interior_gap_reaches_next_value_one_frame_early() -> None:
    f0 = np.array([0.0, 100.0, 0.0, 0.0, 0.0, 200.0, 210.0])
    before = f0.copy()
    out, vuv = interpolate_f0(f0)
    np.testing.assert_array_equal(f0, before)  # input untouched
    # Gap of 3 frames between 100 and 200: step (200-100)/3, so the last gap frame is already 200.
    expected = [100.0, 100.0, 100.0 + 100.0 / 3, 100.0 + 200.0 / 3, 200.0, 200.0, 210.0]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    assert out.dtype == np.float64
    assert vuv.dtype == np.float32
    np.testing.assert_array_equal(vuv, [0, 1, 0, 0, 0, 1, 1])


def test_interpolate_f0_gap_before_last_frame_overwrites_it() -> None:
    out, _ = interpolate_f0(np.array([120.0, 130.0, 0.0, 0.0, 150.0]))
    # The next voiced frame is the last one, so 4.1 fills to the end with the last voiced value.
    np.testing.assert_array_equal(out, [120.0, 130.0, 130.0, 130.0, 130.0])
    out, _ = interpolate_f0(np.array([0.0, 0.0, 150.0]))
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0])


def test_interpolate_f0_trailing_and_unvoiced() -> None:
    out, vuv = interpolate_f0(np.array([110.0, 0.0, 0.0], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [110.0, 110.0, 110.0])
    np.testing.assert_array_equal(vuv, [1, 0, 0])
    out, vuv = interpolate_f0(np.zeros(4))
    np.testing.assert_array_equal(out, np.zeros(4))
    np.testing.assert_array_equal(vuv, np.zeros(4))
