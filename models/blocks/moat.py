"""MOAT block (Yang et al., 2022): a mobile convolution followed by self-attention."""
from __future__ import annotations

import torch
from torch import nn

from models.blocks.attention import SelfAttentionBlock
from models.blocks.mbconv import MBConv


class MOATBlock(nn.Module):
    """Residual MBConv then residual pre-norm MHSA: ``B x C x H x W -> B x C x H x W``.

    MOAT replaces the transformer MLP by the MBConv and moves it before the attention.

    Args:
        dim: ``C`` (must be divisible by ``num_heads``).
        num_heads: attention heads.
        expansion: MBConv hidden width as a multiple of ``C``.
        use_se: SE inside the MBConv.
    """

    def __init__(self, dim: int, num_heads: int = 4, expansion: float = 4.0, use_se: bool = False) -> None:
        super().__init__()
        self.mbconv = MBConv(dim, dim, expansion=expansion, use_se=use_se)
        self.attention = SelfAttentionBlock(dim, num_heads=num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(self.mbconv(x))
