"""Small layers shared by every block family: conv-BN pairs and their fusion, layer scale.

Fusion identities used throughout (all exact in eval mode):

* ``BN(conv(x))`` is a conv with weight ``W * g / s`` and bias ``beta + (b - mu) * g / s``
  where ``s = sqrt(var + eps)`` (:func:`fuse_conv_bn`).
* ``gamma * conv(x)`` is a conv with weight and bias scaled per output channel
  (:func:`fold_channel_scale`).
"""
from __future__ import annotations

import torch
from torch import nn


def fuse_conv_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of the conv equivalent to ``bn(conv(x))`` in eval mode.

    Args:
        weight: conv kernel, ``C_out x C_in/groups x k x k``.
        bias: conv bias ``C_out`` or ``None``.
        bn: the BatchNorm that follows the conv (its running statistics are used).

    Returns:
        ``(kernel, bias)`` with shapes ``C_out x C_in/groups x k x k`` and ``C_out``.
    """
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    conv_bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.reshape(-1, 1, 1, 1), beta + (conv_bias - bn.running_mean) * scale


def fold_channel_scale(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    """Multiply ``conv``'s output channels by ``scale`` (shape ``C_out``) in place, adding a bias if needed."""
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device))
        else:
            conv.bias.mul_(scale)


class ConvBN(nn.Module):
    """Conv2d followed by BatchNorm2d; fuses into one biased Conv2d.

    ``bias`` keeps a (redundant) conv bias for parameter parity with reference models.

    ``B x C_in x H x W -> B x C_out x H/stride x W/stride`` (``same`` padding).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel ``C_out x C_in/groups x k x k`` and bias ``C_out`` of the equivalent single conv."""
        if self.bn is None:
            bias = self.conv.bias if self.conv.bias is not None else self.conv.weight.new_zeros(self.conv.out_channels)
            return self.conv.weight, bias
        return fuse_conv_bn(self.conv.weight, self.conv.bias, self.bn)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BatchNorm into the conv in place (idempotent)."""
        if self.bn is None:
            return
        kernel, bias = self.fused_kernel_bias()
        fused = nn.Conv2d(
            self.conv.in_channels,
            self.conv.out_channels,
            self.conv.kernel_size,
            stride=self.conv.stride,
            padding=self.conv.padding,
            groups=self.conv.groups,
            bias=True,
        ).to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        self.conv = fused
        self.bn = None


class LayerScale2d(nn.Module):
    """Learnable per-channel scale ``gamma`` on ``B x C x H x W`` maps (CaiT-style layer scale)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.reshape(1, -1, 1, 1)


def check_positive(name: str, value: int) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def apply_to_tokens(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a token module (``B x N x C -> B x N x C``) on a map ``B x C x H x W``, ``N = H*W``."""
    b, c, h, w = x.shape
    tokens = module(x.flatten(2).transpose(1, 2))
    return tokens.transpose(1, 2).reshape(b, c, h, w)
