"""Stems and between-stage downsampling layers."""
from __future__ import annotations

import torch
from torch import nn

from models.blocks.layers import ConvBN, check_positive


#: The strides of :class:`ConvStem`'s two layers for each total stride it can take.
CONV_STEM_STRIDES: dict[int, tuple[int, int]] = {4: (2, 2), 2: (1, 2), 1: (1, 1)}


class ConvStem(nn.Module):
    """Two 3x3 conv-BN-ReLU layers, stride 2 each (SwiftFormer/EfficientFormer stem).

    ``B x C_in x H x W -> B x C_out x H/stride x W/stride``; the first layer has ``C_out // 2``
    channels. ``stride`` 4 is the published stem; 2 and 1 keep more of a small image (28-32 px
    photographs would otherwise reach the last stage at 1 x 1).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 4) -> None:
        super().__init__()
        check_positive("stem in_channels", in_channels)
        check_positive("stem out_channels", out_channels)
        if out_channels < 2:
            raise ValueError(f"ConvStem needs at least 2 output channels, got {out_channels}.")
        if stride not in CONV_STEM_STRIDES:
            raise ValueError(f"ConvStem takes a stride of {', '.join(map(str, CONV_STEM_STRIDES))}, got {stride!r}.")
        first, second = CONV_STEM_STRIDES[stride]
        mid = out_channels // 2
        self.layers = nn.Sequential(
            ConvBN(in_channels, mid, 3, stride=first, bias=True),
            nn.ReLU(),
            ConvBN(mid, out_channels, 3, stride=second, bias=True),
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
