"""The decoder's polyphase transposed convolutions against torch's ConvTranspose1d."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.commons import WNConvTranspose1d
from modules.polyphase import conv_forms, conv_transpose_polyphase, polyphase_fits


@pytest.mark.parametrize(("c_in", "c_out", "k", "u", "bias"), [
    (8, 4, 4, 2, True),  # the decoder's narrow levels (q = 2)
    (16, 8, 16, 8, True),  # its second level (q = 2, u = 8: two shifts)
    (6, 5, 9, 3, False),  # odd q: one shift
    (4, 3, 3, 1, True),  # stride 1
])
def test_matches_conv_transpose(c_in: int, c_out: int, k: int, u: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2, bias=bias)
    x = torch.randn(2, c_in, 37)
    assert polyphase_fits(conv)
    with torch.inference_mode():
        got, want = conv_transpose_polyphase(conv, x), conv(x)
    assert got.shape == want.shape == (2, c_out, 37 * u) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_fits_only_plain_same_length_layers() -> None:
    assert not polyphase_fits(nn.ConvTranspose1d(4, 4, 5, 2, padding=1))  # k not a multiple of u
    assert not polyphase_fits(nn.ConvTranspose1d(4, 4, 4, 2, padding=0))  # output longer than u n
    assert not polyphase_fits(nn.ConvTranspose1d(4, 4, 4, 2, padding=1, groups=2))
    assert not polyphase_fits(nn.ConvTranspose1d(512, 256, 16, 8, padding=4))  # wide: oneDNN is as fast
    wn = WNConvTranspose1d(4, 4, 4, 2, padding=1)
    assert not polyphase_fits(wn)  # weight norm not folded yet
    wn.remove_weight_norm()
    assert polyphase_fits(wn)


def test_forms_off_while_tracing() -> None:
    seen = []
    with pytest.warns(DeprecationWarning):
        torch.jit.trace(lambda x: seen.append(conv_forms(x)) or x * 2, torch.ones(2), check_trace=False)
    assert seen == [False] and conv_forms(torch.ones(2))
