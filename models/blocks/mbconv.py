"""Inverted residual (MBConv) block of MobileNetV2/V3 and MOAT, with optional SE."""
from __future__ import annotations

import torch
from torch import nn

from models.blocks.layers import ConvBN, check_positive
from models.blocks.se import SqueezeExcite


class MBConv(nn.Module):
    """``B x C_in x H x W -> B x C_out x H/stride x W/stride``.

    1x1 expansion conv-BN-GELU, 3x3 depthwise conv-BN-GELU (takes the stride), optional
    Squeeze-and-Excitation, 1x1 projection conv-BN; a residual connection when the shapes
    allow it (``stride == 1`` and ``C_in == C_out``). Every conv-BN fuses on
    :func:`models.reparam.reparameterize_model`.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        stride: 1 or 2.
        expansion: hidden width as a multiple of ``C_in``.
        use_se: gate the hidden features with SE.
        se_reduction: SE bottleneck is ``C_in // se_reduction`` wide (MOAT/EfficientNet
            size it from the block input); must divide ``C_in``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: float = 4.0,
        use_se: bool = False,
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        check_positive("MBConv in_channels", in_channels)
        check_positive("MBConv out_channels", out_channels)
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride must be 1 or 2, got {stride!r}.")
        if expansion <= 0:
            raise ValueError(f"MBConv expansion must be positive, got {expansion!r}.")
        hidden = max(1, int(round(in_channels * expansion)))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = [
            ConvBN(in_channels, hidden, 1),
            nn.GELU(),
            ConvBN(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.GELU(),
        ]
        if use_se:
            check_positive("MBConv se_reduction", se_reduction)
            if in_channels % se_reduction != 0:
                raise ValueError(
                    f"MBConv SE reduction {se_reduction} does not divide the input width {in_channels}; "
                    f"choose a reduction among the divisors of {in_channels}."
                )
            layers.append(SqueezeExcite(hidden, hidden_channels=in_channels // se_reduction))
        layers.append(ConvBN(hidden, out_channels, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out
