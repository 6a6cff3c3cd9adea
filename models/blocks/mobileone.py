"""MobileOne blocks (Vasu et al., 2023) with structural re-parameterisation (thesis §2.3).

At train time a :class:`MobileOneBlock` sums ``k`` over-parameterised conv-BN branches, a
1x1 conv-BN "scale" branch and a BN "identity" branch; all of them are linear in the input,
so :meth:`MobileOneBlock.reparameterize` folds them into one biased conv for inference.
"""
from __future__ import annotations

import torch
from torch import nn

from models.blocks.layers import ConvBN, check_positive, fuse_conv_bn
from models.blocks.se import SqueezeExcite


class MobileOneBlock(nn.Module):
    """One re-parameterisable conv: ``B x C_in x H x W -> B x C_out x H/stride x W/stride``.

    Train-time form: ``act(se(sum_i convbn_i(x) + convbn_1x1(x) + bn(x)))``, where the scale
    branch exists when ``kernel_size > 1`` and the identity branch when the shapes allow
    (``C_in == C_out`` and ``stride == 1``). Inference form: ``act(se(conv(x)))``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: odd kernel size of the main branches.
        stride: spatial stride.
        groups: conv groups (``groups == C_in == C_out`` is a depthwise conv).
        num_conv_branches: ``k``, the number of parallel ``kernel_size`` conv-BN branches.
        use_se: gate the output with Squeeze-and-Excitation.
        se_reduction: SE bottleneck reduction (must divide ``C_out``).
        activation: apply ReLU at the end.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        num_conv_branches: int = 1,
        use_se: bool = False,
        se_reduction: int = 16,
        activation: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
            ("stride", stride),
            ("groups", groups),
            ("num_conv_branches", num_conv_branches),
        ):
            check_positive(f"MobileOneBlock {name}", value)
        if kernel_size % 2 == 0:
            raise ValueError(f"MobileOneBlock kernel_size must be odd (same padding), got {kernel_size}.")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"MobileOneBlock groups={groups} must divide both in_channels={in_channels} "
                f"and out_channels={out_channels}."
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.num_conv_branches = num_conv_branches

        self.reparam_conv: nn.Conv2d | None = None
        self.conv_kxk = nn.ModuleList(
            ConvBN(in_channels, out_channels, kernel_size, stride=stride, groups=groups) for _ in range(num_conv_branches)
        )
        self.conv_scale = ConvBN(in_channels, out_channels, 1, stride=stride, groups=groups) if kernel_size > 1 else None
        self.identity = nn.BatchNorm2d(out_channels) if in_channels == out_channels and stride == 1 else None
        self.se = SqueezeExcite(out_channels, reduction=se_reduction) if use_se else nn.Identity()
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = self.identity(x) if self.identity is not None else 0
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        for branch in self.conv_kxk:
            out = out + branch(x)
        return self.act(self.se(out))

    @torch.no_grad()
    def zero_init_branches(self) -> bool:
        """Start the conv and scale branches at zero (their BatchNorm scales 0) when the block
        has an identity branch, so that it begins as ``act(se(bn(x)))``: a deep stack of such
        blocks then trains like a residual network from its first steps (the zero-gamma
        initialisation of Goyal et al., 2017; timm's ``zero_init_last``). Returns whether the
        block had such branches. Fusion stays exact; the branches learn from the first step,
        through their BatchNorm scales."""
        if self.identity is None or self.reparam_conv is not None:
            return False
        for branch in [*self.conv_kxk, *([self.conv_scale] if self.conv_scale is not None else [])]:
            if branch.bn is not None:
                branch.bn.weight.zero_()
        return True

    def _identity_kernel(self, like: torch.Tensor) -> torch.Tensor:
        """The ``kernel_size`` kernel of the identity map under this block's grouping."""
        kernel = torch.zeros_like(like)
        per_group = self.in_channels // self.groups
        centre = self.kernel_size // 2
        channels = torch.arange(self.in_channels, device=like.device)
        kernel[channels, channels % per_group, centre, centre] = 1.0
        return kernel

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel ``C_out x C_in/groups x k x k`` and bias ``C_out`` of the equivalent single conv."""
        reference = self.conv_kxk[0].conv.weight
        kernel = torch.zeros_like(reference)
        bias = torch.zeros(self.out_channels, dtype=reference.dtype, device=reference.device)
        for branch in self.conv_kxk:
            k, b = branch.fused_kernel_bias()
            kernel, bias = kernel + k, bias + b
        if self.conv_scale is not None:
            k, b = self.conv_scale.fused_kernel_bias()
            pad = self.kernel_size // 2
            kernel, bias = kernel + nn.functional.pad(k, [pad, pad, pad, pad]), bias + b
        if self.identity is not None:
            k, b = fuse_conv_bn(self._identity_kernel(reference), None, self.identity)
            kernel, bias = kernel + k, bias + b
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse all branches into ``reparam_conv`` in place and delete them (idempotent)."""
        if self.reparam_conv is not None:
            return
        kernel, bias = self.fused_kernel_bias()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.kernel_size // 2,
            groups=self.groups,
            bias=True,
        ).to(device=kernel.device, dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        self.reparam_conv = conv
        del self.conv_kxk, self.conv_scale, self.identity


class MobileOneUnit(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 :class:`MobileOneBlock`: one unit of MobileOne's depth.

    ``B x C_in x H x W -> B x C_out x H/stride x W/stride``; the stride is taken by the
    depthwise block, the width change by the pointwise block. With ``use_se`` both blocks
    are gated, as in MobileOne-S4 and the ``mo-se`` choice of the hybrid space.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        num_conv_branches: int = 1,
        use_se: bool = False,
        se_reduction: int = 16,
    ) -> None:
        super().__init__()
        common = dict(num_conv_branches=num_conv_branches, use_se=use_se, se_reduction=se_reduction)
        self.depthwise = MobileOneBlock(in_channels, in_channels, 3, stride=stride, groups=in_channels, **common)
        self.pointwise = MobileOneBlock(in_channels, out_channels, 1, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))
