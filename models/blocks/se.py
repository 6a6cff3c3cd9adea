"""Squeeze-and-Excitation (Hu et al., 2018): channel gating from globally pooled features."""
from __future__ import annotations

import torch
from torch import nn

from models.blocks.layers import check_positive


class SqueezeExcite(nn.Module):
    """Gate each channel by a sigmoid of a bottleneck MLP on the global average.

    ``B x C x H x W -> B x C x H x W``. The bottleneck has ``channels // reduction``
    channels (MobileOne uses ``reduction=16``, MBConv/MOAT gate the expanded width with
    the bottleneck sized from the block input).

    Args:
        channels: ``C``.
        reduction: ``C`` is divided by this to size the bottleneck; must divide ``C``
            so that the bottleneck width is exact (the search spaces count parameters).
        hidden_channels: size the bottleneck directly instead (overrides ``reduction``).
    """

    def __init__(self, channels: int, reduction: int = 16, hidden_channels: int | None = None) -> None:
        super().__init__()
        check_positive("SE channels", channels)
        if hidden_channels is None:
            check_positive("SE reduction", reduction)
            if channels % reduction != 0:
                raise ValueError(
                    f"SE reduction {reduction} does not divide the channel count {channels}; "
                    f"use a reduction that divides {channels} or pass hidden_channels."
                )
            hidden_channels = channels // reduction
        check_positive("SE hidden_channels", hidden_channels)
        self.reduce = nn.Conv2d(channels, hidden_channels, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * torch.sigmoid(scale)
