"""Pointwise MLPs on feature maps: the SwiftFormer MLP and the residual MLP block."""
from __future__ import annotations

import torch
from torch import nn

from models.blocks.layers import LayerScale2d, check_positive, fold_channel_scale


class ConvMlp(nn.Module):
    """BN -> 1x1 conv -> GELU -> 1x1 conv: ``B x C x H x W -> B x C_out x H x W``.

    :meth:`reparameterize` folds the leading BN into the first 1x1 conv (exact: a 1x1
    conv has no padding, so the affine BN commutes into its weights).
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels), ("out_channels", out_channels)):
            check_positive(f"ConvMlp {name}", value)
        self.norm: nn.Module = nn.BatchNorm2d(in_channels)
        self.fc1 = nn.Conv2d(in_channels, hidden_channels, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the input BatchNorm into ``fc1`` in place (idempotent)."""
        if not isinstance(self.norm, nn.BatchNorm2d):
            return
        bn = self.norm
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        shift = bn.bias - bn.running_mean * scale
        weight = self.fc1.weight  # hidden x C x 1 x 1
        self.fc1.bias.add_(weight.flatten(1) @ shift)
        weight.mul_(scale.reshape(1, -1, 1, 1))
        self.norm = nn.Identity()


class MlpBlock(nn.Module):
    """Residual MLP miniblock: ``x + gamma * ConvMlp(x)``, ``B x C x H x W -> B x C x H x W``.

    Args:
        dim: ``C``.
        mlp_ratio: hidden width as a multiple of ``C``.
        layer_scale_init: initial ``gamma`` (per channel); ``None`` disables layer scale.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, layer_scale_init: float | None = 1e-5) -> None:
        super().__init__()
        check_positive("MlpBlock dim", dim)
        self.mlp = ConvMlp(dim, max(1, int(dim * mlp_ratio)))
        self.layer_scale: nn.Module = LayerScale2d(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale(self.mlp(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the layer scale into the MLP's last conv (idempotent)."""
        if isinstance(self.layer_scale, LayerScale2d):
            fold_channel_scale(self.mlp.fc2, self.layer_scale.gamma)
            self.layer_scale = nn.Identity()
