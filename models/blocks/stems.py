"""Stems and between-stage downsampling layers."""
from __future__ import annotations

import torch
from torch import nn

from models.blocks.layers import ConvBN, check_positive


class ConvStem(nn.Module):
    """Two stride-2 3x3 conv-BN-ReLU layers (SwiftFormer/EfficientFormer stem).

    ``B x C_in x H x W -> B x C_out x H/4 x W/4``; the first layer has ``C_out // 2`` channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        check_positive("stem in_channels", in_channels)
        check_positive("stem out_channels", out_channels)
        if out_channels < 2:
            raise ValueError(f"ConvStem needs at least 2 output channels, got {out_channels}.")
        mid = out_channels // 2
        self.layers = nn.Sequential(
            ConvBN(in_channels, mid, 3, stride=2, bias=True),
            nn.ReLU(),
            ConvBN(mid, out_channels, 3, stride=2, bias=True),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv_downsample(in_channels: int, out_channels: int) -> ConvBN:
    """Stride-2 3x3 conv-BN (SwiftFormer's patch embedding between stages).

    ``B x C_in x H x W -> B x C_out x H/2 x W/2``.
    """
    check_positive("downsample in_channels", in_channels)
    check_positive("downsample out_channels", out_channels)
    return ConvBN(in_channels, out_channels, 3, stride=2, bias=True)
