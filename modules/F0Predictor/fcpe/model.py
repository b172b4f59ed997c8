"""The FCPE pitch network of 4.1 (``CFNaiveMelPE``), module names as in ``pretrain/fcpe.pt``.

mel [B, T, n_mels] -> conv stack -> PCmer layers (performer self-attention + conformer convolution)
-> LayerNorm -> weight-normed linear -> sigmoid salience [B, T, out_dims]. Inference only: the random
feature matrices of the performer attention are buffers that always come from the checkpoint.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.commons import _WeightNormMixin

# Performer kernel constants of the original (softmax_kernel): stabiliser added to the query
# features, and to the key logits inside the exponential.
KERNEL_EPS = 1e-4
ATTENTION_EPS = 1e-8


class WNLinear(_WeightNormMixin, nn.Linear):
    """Linear layer with legacy-named weight normalisation (``weight_g`` [out, 1], ``weight_v``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        nn.Linear.__init__(self, in_features, out_features)
        self._apply_weight_norm()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalised_weight(), self.bias)


class FastAttention(nn.Module):
    """Performer (FAVOR+) softmax-kernel linear attention over heads of size ``dim_heads``.

    q, k, v: [B, H, T, D] -> [B, H, T, D].
    """

    def __init__(self, dim_heads: int) -> None:
        super().__init__()
        self.nb_features = int(dim_heads * math.log(dim_heads))
        self.register_buffer("projection_matrix", torch.zeros(self.nb_features, dim_heads))

    def _features(self, data: Tensor, is_query: bool) -> Tensor:
        normaliser = data.shape[-1] ** -0.25
        ratio = self.projection_matrix.shape[0] ** -0.5
        projected = torch.einsum("...id,jd->...ij", normaliser * data, self.projection_matrix.to(data))
        half_norm = (torch.sum(data**2, dim=-1) / 2.0 * normaliser**2).unsqueeze(-1)
        if is_query:
            # Per-row max subtraction only rescales a query row, which the normalisation cancels.
            peak = torch.max(projected, dim=-1, keepdim=True).values
            return ratio * (torch.exp(projected - half_norm - peak) + KERNEL_EPS)
        # 4.1's FCPE keeps no max subtraction for keys and adds the epsilon inside the exponential.
        return ratio * torch.exp(projected - half_norm + KERNEL_EPS)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q = self._features(q, is_query=True)
        k = self._features(k, is_query=False)
        k_sum = k.sum(dim=-2)
        d_inv = 1.0 / (torch.einsum("...nd,...d->...n", q, k_sum) + ATTENTION_EPS)
        context = torch.einsum("...nd,...ne->...de", k, v)
        return torch.einsum("...de,...nd,...n->...ne", context, q, d_inv)


class SelfAttention(nn.Module):
    """Multi-head performer self-attention: [B, T, dim] -> [B, T, dim] (heads of 64 channels)."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.fast_attention = FastAttention(dim_head)
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.Linear(inner, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, -1).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(x)), self._split(self.to_v(x))
        out = self.fast_attention(q, k, v)
        b, h, t, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, t, h * d))


class _Transpose(nn.Module):
    """Swap two axes (a module so that it takes an index in the Sequential, as in the checkpoint)."""

    def __init__(self, dim0: int, dim1: int) -> None:
        super().__init__()
        self.dims = (dim0, dim1)

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(*self.dims)


class _GLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        out, gate = x.chunk(2, dim=1)
        return out * gate.sigmoid()


class _Swish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x.sigmoid()


class DepthWiseConv1d(nn.Module):
    """Depth-wise Conv1d with explicit (left, right) zero padding: [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.padding = (kernel_size // 2, kernel_size // 2 - (kernel_size + 1) % 2)
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.padding))


class ConformerConvModule(nn.Module):
    """LayerNorm, pointwise conv + GLU, depth-wise conv (31), Swish, pointwise conv: [B, T, C] -> same.

    Sequential indices 0, 2, 4, 6 carry the weights (``net.4.conv`` is the depth-wise kernel).
    """

    def __init__(self, dim: int, expansion_factor: int = 2, kernel_size: int = 31) -> None:
        super().__init__()
        inner = dim * expansion_factor
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            _Transpose(1, 2),
            nn.Conv1d(dim, inner * 2, 1),
            _GLU(),
            DepthWiseConv1d(inner, kernel_size),
            _Swish(),
            nn.Conv1d(inner, dim, 1),
            _Transpose(1, 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    """x + attn(LayerNorm(x)), then + conformer convolution (which has its own LayerNorm)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.conformer = ConformerConvModule(dim)
        self.norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads=heads)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.conformer(x)


class PCmer(nn.Module):
    """Stack of :class:`EncoderLayer`: [B, T, dim] -> [B, T, dim]."""

    def __init__(self, num_layers: int, num_heads: int, dim_model: int) -> None:
        super().__init__()
        self._layers = nn.ModuleList([EncoderLayer(dim_model, num_heads) for _ in range(num_layers)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self._layers:
            x = layer(x)
        return x


def f0_to_cents(f0: Tensor) -> Tensor:
    """Hz -> cents relative to 10 Hz: 1200 * log2(f0 / 10)."""
    return 1200.0 * torch.log2(f0 / 10.0)


class FCPE(nn.Module):
    """FCPE salience network: mel [B, T, input_channel] -> salience [B, T, out_dims] in (0, 1).

    ``cent_table`` [out_dims] holds the bin pitches (cents, equally spaced between f0_min and f0_max);
    it is a buffer saved in the checkpoint.
    """

    def __init__(
        self,
        input_channel: int = 128,
        out_dims: int = 360,
        n_layers: int = 12,
        n_chans: int = 512,
        f0_max: float = 1975.5,
        f0_min: float = 32.70,
    ) -> None:
        super().__init__()
        self.n_out = out_dims
        self.register_buffer(
            "cent_table",
            torch.linspace(
                float(f0_to_cents(torch.tensor([f0_min]))[0]),
                float(f0_to_cents(torch.tensor([f0_max]))[0]),
                out_dims,
            ),
        )
        self.stack = nn.Sequential(
            nn.Conv1d(input_channel, n_chans, 3, 1, 1),
            nn.GroupNorm(4, n_chans),
            nn.LeakyReLU(),
            nn.Conv1d(n_chans, n_chans, 3, 1, 1),
        )
        self.decoder = PCmer(num_layers=n_layers, num_heads=8, dim_model=n_chans)
        self.norm = nn.LayerNorm(n_chans)
        self.dense_out = WNLinear(n_chans, out_dims)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.stack(mel.transpose(1, 2)).transpose(1, 2)
        x = self.norm(self.decoder(x))
        return torch.sigmoid(self.dense_out(x))
