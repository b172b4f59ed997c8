"""The RMVPE pitch network (Wei et al., 2023) with the module names of 4.1's ``pretrain/rmvpe.pt``.

A residual U-Net over the log-mel "image" [B, 1, frames, 128] (encoder of 5 down-sampling stages,
4 intermediate stages at the bottom, 5 up-sampling stages with skip connections), a 3-channel
convolution, then a bidirectional GRU and a linear layer with a sigmoid give a salience over 360 pitch
bins (20 cents apart) per frame. The state-dict keys must stay those of the released checkpoint.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

N_MELS = 128
N_CLASS = 360
# BatchNorm momentum of the original; irrelevant at inference but part of the module description.
BN_MOMENTUM = 0.01


class ConvBlockRes(nn.Module):
    """Two 3x3 conv + BN + ReLU layers with a residual connection (1x1 conv when channels change).

    [B, in, H, W] -> [B, out, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (3, 3), (1, 1), (1, 1), bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, (3, 3), (1, 1), (1, 1), bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.conv(x) + skip


def _res_stack(in_channels: int, out_channels: int, n_blocks: int) -> nn.ModuleList:
    return nn.ModuleList(
        [ConvBlockRes(in_channels, out_channels)]
        + [ConvBlockRes(out_channels, out_channels) for _ in range(n_blocks - 1)]
    )


class ResEncoderBlock(nn.Module):
    """``n_blocks`` residual blocks, optionally followed by average pooling.

    forward: [B, in, H, W] -> (features [B, out, H, W], pooled [B, out, H/kh, W/kw]) when pooling,
    else features only.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] | None, n_blocks: int
    ) -> None:
        super().__init__()
        self.conv = _res_stack(in_channels, out_channels, n_blocks)
        self.pool = nn.AvgPool2d(kernel_size) if kernel_size is not None else None

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        for block in self.conv:
            x = block(x)
        if self.pool is None:
            return x
        return x, self.pool(x)


class Encoder(nn.Module):
    """Input BatchNorm then ``n_encoders`` pooling stages, channels doubling from ``out_channels``.

    forward: [B, in, T, 128] -> (bottom [B, C, T/32, 4], skip features of every stage, top first).
    """

    def __init__(
        self,
        in_channels: int,
        in_size: int,
        n_encoders: int,
        kernel_size: tuple[int, int],
        n_blocks: int,
        out_channels: int = 16,
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, momentum=BN_MOMENTUM)
        self.layers = nn.ModuleList()
        # (channels, mel size) of every skip feature; the unused TimbreFilter is sized from it.
        self.latent_channels: list[tuple[int, int]] = []
        for _ in range(n_encoders):
            self.layers.append(ResEncoderBlock(in_channels, out_channels, kernel_size, n_blocks))
            self.latent_channels.append((out_channels, in_size))
            in_channels = out_channels
            out_channels *= 2
            in_size //= 2
        self.out_size = in_size
        self.out_channel = out_channels

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.bn(x)
        skips = []
        for layer in self.layers:
            skip, x = layer(x)
            skips.append(skip)
        return x, skips


class Intermediate(nn.Module):
    """Non-pooling residual stages at the bottom of the U-Net: [B, in, h, w] -> [B, out, h, w]."""

    def __init__(self, in_channels: int, out_channels: int, n_inters: int, n_blocks: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [ResEncoderBlock(in_channels, out_channels, None, n_blocks)]
            + [ResEncoderBlock(out_channels, out_channels, None, n_blocks) for _ in range(n_inters - 1)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ResDecoderBlock(nn.Module):
    """Transposed-conv up-sampling, concatenation with the skip feature, residual blocks.

    forward: ([B, in, h, w], skip [B, out, h*sh, w*sw]) -> [B, out, h*sh, w*sw].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int], n_blocks: int) -> None:
        super().__init__()
        output_padding = (0, 1) if stride == (1, 2) else (1, 1)
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(
                in_channels, out_channels, (3, 3), stride, (1, 1), output_padding, bias=False
            ),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        self.conv2 = _res_stack(out_channels * 2, out_channels, n_blocks)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = torch.cat((self.conv1(x), skip), dim=1)
        for block in self.conv2:
            x = block(x)
        return x


class Decoder(nn.Module):
    """``n_decoders`` up-sampling stages, channels halving; skips are consumed bottom first."""

    def __init__(self, in_channels: int, n_decoders: int, stride: tuple[int, int], n_blocks: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(n_decoders):
            self.layers.append(ResDecoderBlock(in_channels, in_channels // 2, stride, n_blocks))
            in_channels //= 2

    def forward(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, skips[-1 - i])
        return x


class TimbreFilter(nn.Module):
    """One residual block per skip feature. Present in the released checkpoint (so its keys must
    load strictly) but never called by the U-Net's forward pass."""

    def __init__(self, latent_channels: list[tuple[int, int]]) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ConvBlockRes(c, c) for c, _ in latent_channels])


class DeepUnet0(nn.Module):
    """Residual U-Net: [B, 1, T, 128] -> [B, en_out_channels, T, 128] (T a multiple of 32)."""

    def __init__(
        self,
        kernel_size: tuple[int, int],
        n_blocks: int,
        en_de_layers: int = 5,
        inter_layers: int = 4,
        in_channels: int = 1,
        en_out_channels: int = 16,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, N_MELS, en_de_layers, kernel_size, n_blocks, en_out_channels)
        self.intermediate = Intermediate(
            self.encoder.out_channel // 2, self.encoder.out_channel, inter_layers, n_blocks
        )
        self.tf = TimbreFilter(self.encoder.latent_channels)
        self.decoder = Decoder(self.encoder.out_channel, en_de_layers, kernel_size, n_blocks)

    def forward(self, x: Tensor) -> Tensor:
        x, skips = self.encoder(x)
        x = self.intermediate(x)
        return self.decoder(x, skips)


class BiGRU(nn.Module):
    """Bidirectional GRU, batch first: [B, T, in] -> [B, T, 2 * hidden]."""

    def __init__(self, input_features: int, hidden_features: int, num_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(
            input_features, hidden_features, num_layers=num_layers, batch_first=True, bidirectional=True
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.gru(x)[0]


class E2E0(nn.Module):
    """RMVPE: log-mel [B, 128, T] (T a multiple of 32) -> salience [B, T, 360] in (0, 1).

    4.1 always builds ``E2E0(4, 1, (2, 2))``: 4 residual blocks per stage, one BiGRU layer, 2x2 pooling.
    """

    def __init__(
        self,
        n_blocks: int = 4,
        n_gru: int = 1,
        kernel_size: tuple[int, int] = (2, 2),
        en_de_layers: int = 5,
        inter_layers: int = 4,
        in_channels: int = 1,
        en_out_channels: int = 16,
    ) -> None:
        super().__init__()
        if n_gru < 1:
            raise ValueError("RMVPE needs at least one GRU layer (4.1's checkpoints have one)")
        self.unet = DeepUnet0(kernel_size, n_blocks, en_de_layers, inter_layers, in_channels, en_out_channels)
        self.cnn = nn.Conv2d(en_out_channels, 3, (3, 3), padding=(1, 1))
        # Dropout is a no-op at inference; it keeps the Sequential indices (fc.0 GRU, fc.1 linear).
        self.fc = nn.Sequential(
            BiGRU(3 * N_MELS, 256, n_gru), nn.Linear(512, N_CLASS), nn.Dropout(0.25), nn.Sigmoid()
        )

    def forward(self, mel: Tensor) -> Tensor:
        # Frames become the image height, mel bins the width.
        x = mel.transpose(-1, -2).unsqueeze(1)
        x = self.cnn(self.unet(x))
        # [B, 3, T, 128] -> [B, T, 3 * 128]
        x = x.transpose(1, 2).flatten(-2)
        return self.fc(x)
