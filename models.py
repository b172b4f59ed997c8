"""So-VITS networks: ``SynthesizerTrn`` (generator) and ``MultiPeriodDiscriminator``.

Attribute names are the state-dict contract with so-vits-svc 4.1 checkpoints (``emb_g``, ``pre``, ``enc_p``,
``dec``, ``enc_q``, ``flow``, ``f0_decoder``, ``emb_uv``, ...).
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules import attentions, commons
from modules import f0 as f0_math
from modules.commons import WNConv1d, WNConv2d, get_padding
from modules.modules import WN, residual_coupling_block, transformer_coupling_block
from vdecoder.hifigan.models import Generator

logger = logging.getLogger(__name__)

VOCODERS = ("nsf-hifigan", "nsf-snake-hifigan")


def f0_to_lf0(f0: Tensor) -> Tensor:
    """Hz [B, T] -> scaled log-F0 [B, 1, T] as the F0 decoder sees it."""
    return 2595.0 * torch.log10(1.0 + f0.unsqueeze(1) / 700.0) / 500


def lf0_to_f0(lf0: Tensor) -> Tensor:
    """Inverse of ``f0_to_lf0``: [B, 1, T] -> Hz [B, T]."""
    return (700 * (torch.pow(10, lf0 * 500 / 2595) - 1)).squeeze(1)


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


class TextEncoder(nn.Module):
    """Prior encoder ``enc_p``: x [B, H, T] + coarse F0 -> (z_p, m_p, logs_p, mask)."""

    def __init__(self, out_channels: int, hidden_channels: int, kernel_size: int, n_layers: int,
                 filter_channels: int, n_heads: int, p_dropout: float) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)
        self.f0_emb = nn.Embedding(256, hidden_channels)
        self.enc_ = attentions.Encoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout)

    def forward(self, x: Tensor, x_mask: Tensor, f0: Tensor, noise_scale: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = x + self.f0_emb(f0).transpose(1, 2)
        x = self.enc_(x * x_mask, x_mask)
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + _noise_like(m, generator) * torch.exp(logs) * noise_scale) * x_mask
        return z, m, logs, x_mask


class PosteriorEncoder(nn.Module):
    """Posterior encoder ``enc_q`` (training only): spectrogram [B, 1025, T] -> (z, m, logs, mask)."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int,
                 dilation_rate: int, n_layers: int, gin_channels: int = 0,
                 use_depthwise_conv: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels,
                      use_depthwise_conv=use_depthwise_conv)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, x: Tensor, x_lengths: Tensor,
                g: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x_mask = commons.sequence_mask(x_lengths, x.size(2)).unsqueeze(1).to(x.dtype)
        x = self.enc(self.pre(x) * x_mask, x_mask, g=g)
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + torch.randn_like(m) * torch.exp(logs)) * x_mask
        return z, m, logs, x_mask


class F0Decoder(nn.Module):
    """Automatic F0 prediction: causal transformer on detached frame features -> lf0 [B, 1, T]."""

    def __init__(self, out_channels: int, hidden_channels: int, filter_channels: int, n_heads: int,
                 n_layers: int, kernel_size: int, p_dropout: float, spk_channels: int = 0) -> None:
        super().__init__()
        self.prenet = nn.Conv1d(hidden_channels, hidden_channels, 3, padding=1)
        self.decoder = attentions.FFT(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout)
        self.proj = nn.Conv1d(hidden_channels, out_channels, 1)
        self.f0_prenet = nn.Conv1d(1, hidden_channels, 3, padding=1)
        self.cond = nn.Conv1d(spk_channels, hidden_channels, 1)

    def forward(self, x: Tensor, norm_f0: Tensor, x_mask: Tensor, spk_emb: Tensor | None = None) -> Tensor:
        x = x.detach()
        if spk_emb is not None:
            x = x + self.cond(spk_emb)
        x = x + self.f0_prenet(norm_f0)
        x = self.prenet(x) * x_mask
        x = self.decoder(x * x_mask, x_mask)
        return self.proj(x) * x_mask


class SynthesizerTrn(nn.Module):
    """So-VITS generator; `generator.build_synthesizer` builds the one a config describes."""

    def __init__(self, spec_channels: int, segment_size: int, inter_channels: int, hidden_channels: int,
                 filter_channels: int, n_heads: int, n_layers: int, kernel_size: int, p_dropout: float,
                 resblock: str, resblock_kernel_sizes: Sequence[int],
                 resblock_dilation_sizes: Sequence[Sequence[int]], upsample_rates: Sequence[int],
                 upsample_initial_channel: int, upsample_kernel_sizes: Sequence[int], gin_channels: int,
                 ssl_dim: int, n_speakers: int, sampling_rate: int = 44100, vol_embedding: bool = False,
                 vocoder_name: str = "nsf-hifigan", use_depthwise_conv: bool = False,
                 use_automatic_f0_prediction: bool = True, flow_share_parameter: bool = False,
                 n_flow_layer: int = 4, n_layers_trans_flow: int = 3, use_transformer_flow: bool = False) -> None:
        super().__init__()
        self.spec_channels = spec_channels
        self.inter_channels = inter_channels
        self.hidden_channels = hidden_channels
        self.gin_channels = gin_channels
        self.ssl_dim = ssl_dim
        self.n_speakers = n_speakers
        self.segment_size = segment_size
        self.vol_embedding = vol_embedding
        self.use_automatic_f0_prediction = use_automatic_f0_prediction
        self.character_mix = False

        self.emb_g = nn.Embedding(n_speakers, gin_channels)
        if vol_embedding:
            self.emb_vol = nn.Linear(1, hidden_channels)
        self.pre = nn.Conv1d(ssl_dim, hidden_channels, kernel_size=5, padding=2)
        self.enc_p = TextEncoder(inter_channels, hidden_channels, kernel_size, n_layers,
                                 filter_channels, n_heads, p_dropout)
        if vocoder_name not in VOCODERS:
            logger.warning("unknown vocoder_name %r: using nsf-hifigan", vocoder_name)
            vocoder_name = "nsf-hifigan"
        self.dec = Generator(
            inter_channels, resblock, resblock_kernel_sizes, resblock_dilation_sizes, upsample_rates,
            upsample_initial_channel, upsample_kernel_sizes, sampling_rate=sampling_rate,
            gin_channels=gin_channels, source="sample", snake=vocoder_name == "nsf-snake-hifigan")
        self.enc_q = PosteriorEncoder(spec_channels, inter_channels, hidden_channels, 5, 1, 16,
                                      gin_channels=gin_channels, use_depthwise_conv=use_depthwise_conv)
        if use_transformer_flow:
            self.flow = transformer_coupling_block(
                inter_channels, hidden_channels, filter_channels, n_heads, n_layers_trans_flow, 5,
                p_dropout, n_flow_layer, gin_channels=gin_channels, share_parameter=flow_share_parameter)
        else:
            self.flow = residual_coupling_block(
                inter_channels, hidden_channels, 5, 1, 4, n_flow_layer, gin_channels=gin_channels,
                share_parameter=flow_share_parameter, use_depthwise_conv=use_depthwise_conv)
        if use_automatic_f0_prediction:
            self.f0_decoder = F0Decoder(1, hidden_channels, filter_channels, n_heads, n_layers,
                                        kernel_size, p_dropout, spk_channels=gin_channels)
        self.emb_uv = nn.Embedding(2, hidden_channels)

    def EnableCharacterMix(self, n_speakers_map: int, device: torch.device | str) -> None:  # noqa: N802 (4.1 name)
        """Freeze a table of the first ``n_speakers_map`` speaker embeddings for per-frame mixing."""
        ids = torch.arange(n_speakers_map, device=self.emb_g.weight.device)
        self.speaker_map = self.emb_g(ids).detach().to(device)  # [S, gin]
        self.character_mix = True

    def speaker_condition(self, g: Tensor) -> Tensor:
        """Speaker ids [B, 1] / [B] -> [B, gin, 1]; mix weights [T, S] (EnableCharacterMix) -> [1, gin, T]."""
        if self.character_mix and len(g) > 1:
            weights = g.to(self.speaker_map.dtype)
            return torch.matmul(weights, self.speaker_map).transpose(0, 1).unsqueeze(0)
        if g.dim() == 1:
            g = g.unsqueeze(0)
        return self.emb_g(g).transpose(1, 2)

    def frame_input(self, c: Tensor, uv: Tensor, x_mask: Tensor, vol: Tensor | None) -> Tensor:
        """pre(c) * mask + emb_uv(uv) (+ emb_vol(vol)): [B, H, T]."""
        x = self.pre(c) * x_mask + self.emb_uv(uv.long()).transpose(1, 2)
        if vol is not None and self.vol_embedding:
            x = x + self.emb_vol(vol[:, :, None]).transpose(1, 2)
        return x

    def forward(self, c: Tensor, f0: Tensor, uv: Tensor, spec: Tensor, g: Tensor | None = None,
                c_lengths: Tensor | None = None, spec_lengths: Tensor | None = None,
                vol: Tensor | None = None):
        """Training pass on a padded batch: c [B, ssl, T], f0/uv [B, T], spec [B, 1025, T], g [B, 1].

        Returns (y_hat [B, 1, S*hop], ids_slice [B], spec_mask, (z, z_p, m_p, logs_p, m_q, logs_q),
        pred_lf0, norm_lf0, lf0); the F0 terms are 0 without the F0 decoder.
        """
        g = self.emb_g(g).transpose(1, 2)
        x_mask = commons.sequence_mask(c_lengths, c.size(2)).unsqueeze(1).to(c.dtype)
        x = self.frame_input(c, uv, x_mask, vol)
        if self.use_automatic_f0_prediction:
            lf0 = f0_to_lf0(f0)
            norm_lf0 = f0_math.normalize_f0(lf0, x_mask, uv)
            pred_lf0 = self.f0_decoder(x, norm_lf0, x_mask, spk_emb=g)
        else:
            lf0 = norm_lf0 = pred_lf0 = 0
        _, m_p, logs_p, _ = self.enc_p(x, x_mask, f0=f0_math.f0_to_coarse(f0))
        z, m_q, logs_q, spec_mask = self.enc_q(spec, spec_lengths, g=g)
        z_p = self.flow(z, spec_mask, g=g)
        z_slice, pitch_slice, ids_slice = commons.rand_slice_segments_with_pitch(
            z, f0, spec_lengths, self.segment_size)
        o = self.dec(z_slice, pitch_slice, g=g)
        return o, ids_slice, spec_mask, (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, norm_lf0, lf0

    @torch.no_grad()
    def infer(self, c: Tensor, f0: Tensor, uv: Tensor, g: Tensor | None = None, noice_scale: float = 0.35,
              seed: int = 52468, predict_f0: bool = False, vol: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Convert one item: c [1, ssl, T], f0/uv [1, T] (Hz / 0-1), g speaker ids or mix -> (audio [1, 1, T*hop],
        f0 [1, T]). Random draws come from a generator seeded with ``seed`` on the input's device, in 4.1's order
        (results match 4.1 on CPU) but without 4.1's reseeding of the global RNG.
        """
        generator = torch.Generator(device=c.device)
        generator.manual_seed(seed)
        x_mask = torch.ones(c.size(0), 1, c.size(2), dtype=c.dtype, device=c.device)
        g = self.speaker_condition(g)
        x = self.frame_input(c, uv, x_mask, vol)
        if self.use_automatic_f0_prediction and predict_f0:
            norm_lf0 = f0_math.normalize_f0(f0_to_lf0(f0), x_mask, uv, random_scale=False)
            f0 = lf0_to_f0(self.f0_decoder(x, norm_lf0, x_mask, spk_emb=g))
        z_p, _, _, c_mask = self.enc_p(x, x_mask, f0=f0_math.f0_to_coarse(f0), noise_scale=noice_scale,
                                       generator=generator)
        z = self.flow(z_p, c_mask, g=g, reverse=True)
        o = self.dec(z * c_mask, f0, g=g, generator=generator)
        return o, f0

    def remove_weight_norm(self) -> None:
        """Fold weight norm everywhere for faster inference (state-dict keys change)."""
        commons.remove_weight_norm(self)


class DiscriminatorP(nn.Module):
    """Period discriminator: audio folded to [B, 1, T/p, p], 2-D convs with (5, 1) kernels; ``width`` scales 4.1's
    channels (32, 128, 512, 1024, 1024), 1.0 gives 4.1's layers and state dict."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False,
                 width: float = 1.0) -> None:
        super().__init__()
        self.period = period
        norm = nn.utils.spectral_norm if use_spectral_norm else _identity
        conv = nn.Conv2d if use_spectral_norm else WNConv2d
        pad = (get_padding(kernel_size, 1), 0)
        chans = [1] + [_scaled(c, width) for c in (32, 128, 512, 1024, 1024)]
        self.convs = nn.ModuleList([
            norm(conv(chans[i], chans[i + 1], (kernel_size, 1), (stride if i < 4 else 1, 1), padding=pad))
            for i in range(5)])
        self.conv_post = norm(conv(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        return _conv_stack(self.convs, self.conv_post, x.view(b, c, t // self.period, self.period))


class DiscriminatorS(nn.Module):
    """Scale discriminator on raw audio with grouped 1-D convs; ``width`` as in `DiscriminatorP`."""

    def __init__(self, use_spectral_norm: bool = False, width: float = 1.0) -> None:
        super().__init__()
        norm = nn.utils.spectral_norm if use_spectral_norm else _identity
        conv = nn.Conv1d if use_spectral_norm else WNConv1d
        specs = [(1, 16, 15, 1, 1, 7), (16, 64, 41, 4, 4, 20), (64, 256, 41, 4, 16, 20),
                 (256, 1024, 41, 4, 64, 20), (1024, 1024, 41, 4, 256, 20), (1024, 1024, 5, 1, 1, 2)]
        layers = []
        for i, o, k, s, groups, p in specs:
            i, o = (1 if i == 1 else _scaled(i, width)), _scaled(o, width)
            groups = max(1, round(groups * width))
            while i % groups or o % groups:  # a narrower layer keeps a group count that divides both sides
                groups -= 1
            layers.append(norm(conv(i, o, k, s, groups=groups, padding=p)))
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(conv(_scaled(1024, width), 1, 3, 1, padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _conv_stack(self.convs, self.conv_post, x)


class MultiPeriodDiscriminator(nn.Module):
    """DiscriminatorS + DiscriminatorP for periods 2, 3, 5, 7, 11. ``width`` (> 0) scales every channel count;
    1.0 is 4.1's network (47 M values); other widths keep the layer names, so checkpoints differ only in shapes."""

    def __init__(self, use_spectral_norm: bool = False, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"discriminator width must be > 0, got {width}")
        periods = [2, 3, 5, 7, 11]
        self.discriminators = nn.ModuleList(
            [DiscriminatorS(use_spectral_norm=use_spectral_norm, width=width)]
            + [DiscriminatorP(p, use_spectral_norm=use_spectral_norm, width=width) for p in periods])

    def forward(self, y: Tensor, y_hat: Tensor):
        """Real and generated audio [B, 1, N] -> (real scores, fake scores, real fmaps, fake fmaps)."""
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            y_d_r, fmap_r = d(y)
            y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            y_d_gs.append(y_d_g)
            fmap_rs.append(fmap_r)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Convs with leaky ReLU 0.1, then ``conv_post``: (flattened score [B, N], every conv output)."""
    fmap = []
    for layer in convs:
        x = F.leaky_relu(layer(x), 0.1)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


def _identity(module: nn.Module) -> nn.Module:
    return module


def _scaled(channels: int, width: float) -> int:
    """``channels`` x ``width``, rounded, at least 1."""
    return max(1, round(channels * width))
