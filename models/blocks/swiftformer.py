"""SwiftFormer blocks (Shaker et al., ICCV 2023): conv encoder, efficient additive attention
and the attention block that hosts any token mixer.

Token mixer interface
---------------------
:class:`SwiftFormerBlock` takes ``token_mixer: TokenMixerFactory``, a callable mapping the
channel dimension ``C`` to a module that maps tokens ``B x N x C -> B x N x C`` (``N = H*W``).
The block flattens its ``B x C x H x W`` input to tokens, mixes them, and folds them back.
:class:`EfficientAdditiveAttention` is the default; any attention variant with this
signature (e.g. ``functools.partial(MultiHeadSelfAttention, num_heads=4)``) plugs in.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks.layers import ConvBN, LayerScale2d, apply_to_tokens, check_positive, fold_channel_scale
from models.blocks.mlp import MlpBlock

TokenMixerFactory = Callable[[int], nn.Module]
"""``C -> module`` whose forward maps tokens ``B x N x C -> B x N x C``."""

BlockFactory = Callable[[int], nn.Module]
"""``C -> module`` whose forward maps ``B x C x H x W -> B x C x H x W``."""


class ConvEncoder(nn.Module):
    """SwiftFormer's conv block: ``x + gamma * pw(GELU(pw(BN(dw3x3(x)))))``.

    ``B x C x H x W -> B x C x H x W``. With ``hidden_dim == dim`` this is the "local
    representation" that opens every SwiftFormer attention block.
    :meth:`reparameterize` fuses the BN into the depthwise conv and ``gamma`` into the
    last pointwise conv.

    Args:
        dim: ``C``.
        hidden_dim: width between the two pointwise convs (SwiftFormer: ``4 * C``).
        kernel_size: depthwise kernel size (odd).
        layer_scale_init: initial ``gamma``; ``None`` disables layer scale.
    """

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 3, layer_scale_init: float | None = 1.0) -> None:
        super().__init__()
        check_positive("ConvEncoder dim", dim)
        check_positive("ConvEncoder hidden_dim", hidden_dim)
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvEncoder kernel_size must be odd (same padding), got {kernel_size}.")
        self.dwconv = ConvBN(dim, dim, kernel_size, groups=dim, bias=True)
        self.pwconv1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(hidden_dim, dim, 1)
        self.layer_scale: nn.Module = LayerScale2d(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale(self.pwconv2(self.act(self.pwconv1(self.dwconv(x)))))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the layer scale into ``pwconv2`` (the conv-BN is fused by its own method)."""
        if isinstance(self.layer_scale, LayerScale2d):
            fold_channel_scale(self.pwconv2, self.layer_scale.gamma)
            self.layer_scale = nn.Identity()


class EfficientAdditiveAttention(nn.Module):
    """SwiftFormer's linear-complexity attention on tokens ``B x N x C -> B x N x C``.

    Queries and keys are L2-normalised; a learned vector ``w_g`` scores each query token,
    the scores (normalised over tokens) pool the queries into one global query ``B x 1 x C``,
    which modulates the keys element-wise; a linear layer plus the queries as residual,
    then a final linear projection, give the output. No ``N x N`` matrix is ever formed.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        check_positive("EfficientAdditiveAttention dim", dim)
        self.scale = dim**-0.5
        self.to_query = nn.Linear(dim, dim)
        self.to_key = nn.Linear(dim, dim)
        self.w_g = nn.Parameter(torch.randn(dim, 1))
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = F.normalize(self.to_query(x), dim=-1)  # B x N x C
        key = F.normalize(self.to_key(x), dim=-1)  # B x N x C
        scores = F.normalize(query @ self.w_g * self.scale, dim=1)  # B x N x 1
        global_query = (scores * query).sum(dim=1, keepdim=True)  # B x 1 x C
        return self.final(self.proj(global_query * key) + query)


class SwiftFormerBlock(nn.Module):
    """SwiftFormer attention block on ``B x C x H x W -> B x C x H x W``.

    ``x = local(x)``; ``x = x + gamma_1 * unflatten(mixer(flatten(x)))``;
    ``x = x + gamma_2 * mlp(x)`` (the last step is an :class:`MlpBlock`).

    Args:
        dim: ``C``.
        token_mixer: ``C -> module`` mapping tokens ``B x N x C -> B x N x C``;
            defaults to :class:`EfficientAdditiveAttention`.
        local: ``C -> module`` mapping ``B x C x H x W`` to the same shape, run before the
            mixer; defaults to SwiftFormer's local representation
            (``ConvEncoder(C, hidden_dim=C)``).
        mlp_ratio: hidden width of the MLP as a multiple of ``C``.
        layer_scale_init: initial ``gamma_1``, ``gamma_2``; ``None`` disables layer scale.
    """

    def __init__(
        self,
        dim: int,
        token_mixer: TokenMixerFactory | None = None,
        local: BlockFactory | None = None,
        mlp_ratio: float = 4.0,
        layer_scale_init: float | None = 1e-5,
    ) -> None:
        super().__init__()
        check_positive("SwiftFormerBlock dim", dim)
        if token_mixer is not None and not callable(token_mixer):
            raise ValueError(f"token_mixer must be a callable mapping the channel dim to a module, got {token_mixer!r}.")
        if local is not None and not callable(local):
            raise ValueError(f"local must be a callable mapping the channel dim to a module, got {local!r}.")
        self.local = local(dim) if local is not None else ConvEncoder(dim, hidden_dim=dim)
        self.token_mixer = token_mixer(dim) if token_mixer is not None else EfficientAdditiveAttention(dim)
        self.layer_scale: nn.Module = LayerScale2d(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.mlp = MlpBlock(dim, mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local(x)
        x = x + self.layer_scale(apply_to_tokens(self.token_mixer, x))
        return self.mlp(x)
