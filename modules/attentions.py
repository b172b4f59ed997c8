"""Transformer blocks of the prior encoder, the F0 decoder and the transformer flow.

``Encoder``: post-LN self-attention stack with windowed relative positions (``enc_p.enc_``).
``FFT``: causal post-LN stack without relative positions (``f0_decoder.decoder`` and, with
``isflow``, the coupling network of the transformer flow).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.commons import WNConv1d, gated_tanh_sigmoid, subsequent_mask

MASKED_SCORE = -1e4


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] tensors (parameters ``gamma``/``beta``)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with 1x1-conv projections and optional relative positions.

    With ``window_size`` w, learned key/value embeddings ``emb_rel_k``/``emb_rel_v``
    ([1, 2w+1, d_k], shared by all heads) add q_i . Ek[j-i+w] / sqrt(d_k) to the score of
    every pair with |j - i| <= w, and sum_j p_ij Ev[j-i+w] to the output.
    """

    def __init__(self, channels: int, out_channels: int, n_heads: int, p_dropout: float = 0.0,
                 window_size: int | None = None, proximal_init: bool = False) -> None:
        super().__init__()
        assert channels % n_heads == 0, "channels must be divisible by n_heads"
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        if window_size is not None:
            std = self.k_channels ** -0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)
        if proximal_init:
            with torch.no_grad():
                self.conv_k.weight.copy_(self.conv_q.weight)
                self.conv_k.bias.copy_(self.conv_q.bias)

    def forward(self, x: Tensor, c: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x: queries [B, C, Tq], c: keys/values [B, C, Tk], attn_mask [B or 1, 1, Tq, Tk]."""
        q, k, v = self.conv_q(x), self.conv_k(c), self.conv_v(c)
        b, d, t_k = k.shape
        t_q = q.size(2)
        q = q.view(b, self.n_heads, self.k_channels, t_q).transpose(2, 3) / math.sqrt(self.k_channels)
        k = k.view(b, self.n_heads, self.k_channels, t_k).transpose(2, 3)
        v = v.view(b, self.n_heads, self.k_channels, t_k).transpose(2, 3)
        scores = torch.matmul(q, k.transpose(-2, -1))  # [B, H, Tq, Tk]
        if self.window_size is not None:
            assert t_q == t_k, "relative attention is only used for self-attention"
            index, valid = self._relative_index(t_q, q.device)
            rel = torch.matmul(q, self.emb_rel_k.transpose(1, 2))  # [B, H, T, 2w+1]
            scores = scores + torch.gather(rel, 3, index.expand(b, self.n_heads, -1, -1)) * valid
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, MASKED_SCORE)
        p_attn = self.drop(F.softmax(scores, dim=-1))
        out = torch.matmul(p_attn, v)
        if self.window_size is not None:
            out = out + torch.matmul(self._weights_by_offset(p_attn), self.emb_rel_v)
        out = out.transpose(2, 3).contiguous().view(b, d, t_q)
        return self.conv_o(out)

    def _relative_index(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """For every (i, j): column j-i+w of the [T, 2w+1] relative table, and whether |j-i|<=w."""
        w = self.window_size
        pos = torch.arange(length, device=device)
        offset = pos.unsqueeze(0) - pos.unsqueeze(1) + w  # [T, T], value j - i + w
        valid = (offset >= 0) & (offset <= 2 * w)
        return offset.clamp(0, 2 * w).view(1, 1, length, length), valid.view(1, 1, length, length)

    def _weights_by_offset(self, p_attn: Tensor) -> Tensor:
        """Regroup attention weights [B, H, T, T] by relative offset: [B, H, T, 2w+1]."""
        w = self.window_size
        length = p_attn.size(-1)
        pos = torch.arange(length, device=p_attn.device)
        cols = pos.unsqueeze(1) + torch.arange(-w, w + 1, device=p_attn.device).unsqueeze(0)  # [T, 2w+1]
        valid = (cols >= 0) & (cols < length)
        index = cols.clamp(0, length - 1).view(1, 1, length, 2 * w + 1)
        gathered = torch.gather(p_attn, 3, index.expand(p_attn.size(0), p_attn.size(1), -1, -1))
        return gathered * valid


class FFN(nn.Module):
    """Masked two-layer convolutional feed-forward block, 'same' or causal padding."""

    def __init__(self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int,
                 p_dropout: float = 0.0, causal: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.causal = causal
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def _pad(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        if k == 1:
            return x
        left, right = (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2)
        return F.pad(x, (left, right))

    def forward(self, x: Tensor, x_mask: Tensor) -> Tensor:
        x = torch.relu(self.conv_1(self._pad(x * x_mask)))
        x = self.drop(x)
        x = self.conv_2(self._pad(x * x_mask))
        return x * x_mask


class Encoder(nn.Module):
    """Prior-encoder transformer: [B, H, T] -> [B, H, T] (relative attention, window 4)."""

    def __init__(self, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int,
                 kernel_size: int = 1, p_dropout: float = 0.0, window_size: int = 4) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(MultiHeadAttention(
                hidden_channels, hidden_channels, n_heads, p_dropout=p_dropout, window_size=window_size))
            self.norm_layers_1.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(FFN(hidden_channels, hidden_channels, filter_channels, kernel_size, p_dropout))
            self.norm_layers_2.append(LayerNorm(hidden_channels))

    def forward(self, x: Tensor, x_mask: Tensor) -> Tensor:
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)
        x = x * x_mask
        for i in range(self.n_layers):
            y = self.drop(self.attn_layers[i](x, x, attn_mask))
            x = self.norm_layers_1[i](x + y)
            y = self.drop(self.ffn_layers[i](x, x_mask))
            x = self.norm_layers_2[i](x + y)
        return x * x_mask


class FFT(nn.Module):
    """Causal transformer stack; with ``isflow`` each layer is first gated by a speaker term.

    Flow conditioning: ``cond_layer`` (weight-normed 1x1, gin -> 2H * n_layers) is applied to g
    once; before layer i, ``x = gate(cond_pre(x) + g[2H*i : 2H*(i+1)])``.
    """

    def __init__(self, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int = 1,
                 kernel_size: int = 1, p_dropout: float = 0.0, isflow: bool = False,
                 gin_channels: int = 0) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        if isflow:
            self.cond_pre = nn.Conv1d(hidden_channels, 2 * hidden_channels, 1)
            self.cond_layer = WNConv1d(gin_channels, 2 * hidden_channels * n_layers, 1)
        self.isflow = isflow
        self.drop = nn.Dropout(p_dropout)
        self.self_attn_layers = nn.ModuleList()
        self.norm_layers_0 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        for _ in range(n_layers):
            self.self_attn_layers.append(MultiHeadAttention(
                hidden_channels, hidden_channels, n_heads, p_dropout=p_dropout, proximal_init=True))
            self.norm_layers_0.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(FFN(
                hidden_channels, hidden_channels, filter_channels, kernel_size, p_dropout, causal=True))
            self.norm_layers_1.append(LayerNorm(hidden_channels))

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None) -> Tensor:
        """x [B, H, T], x_mask [B, 1, T], g [B, gin, 1 or T] (flow only) -> [B, H, T]."""
        if g is not None:
            g = self.cond_layer(g)
        # Only the causal mask is applied (padded frames never precede valid ones).
        attn_mask = subsequent_mask(x_mask.size(2), device=x.device).to(x.dtype)
        x = x * x_mask
        h2 = 2 * self.hidden_channels
        for i in range(self.n_layers):
            if g is not None:
                x = gated_tanh_sigmoid(self.cond_pre(x), g[:, i * h2:(i + 1) * h2, :], self.hidden_channels)
            y = self.drop(self.self_attn_layers[i](x, x, attn_mask))
            x = self.norm_layers_0[i](x + y)
            y = self.drop(self.ffn_layers[i](x, x_mask))
            x = self.norm_layers_1[i](x + y)
        return x * x_mask
