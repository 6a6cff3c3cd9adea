"""Multi-head self-attention (Vaswani et al., 2017) for feature maps, via tokens."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks.layers import LayerScale2d, apply_to_tokens, check_positive


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class MultiHeadSelfAttention(nn.Module):
    """Softmax attention over tokens ``B x N x C -> B x N x C`` with ``num_heads`` heads.

    Also a valid token mixer for :class:`models.blocks.swiftformer.SwiftFormerBlock`
    (``functools.partial(MultiHeadSelfAttention, num_heads=h)``). Cost is ``O(N^2 C)``.
    """

    def __init__(self, dim: int, num_heads: int = 4) -> None:
        super().__init__()
        check_positive("MultiHeadSelfAttention dim", dim)
        check_positive("MultiHeadSelfAttention num_heads", num_heads)
        if dim % num_heads != 0:
            raise ValueError(
                f"Attention width {dim} is not divisible by num_heads={num_heads}; "
                f"valid head counts for width {dim} are {_divisors(dim)}."
            )
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # B x heads x N x C/heads
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SelfAttentionBlock(nn.Module):
    """Pre-norm residual attention miniblock: ``x + gamma * MHSA(LN(x))`` on ``B x C x H x W``.

    Args:
        dim: ``C`` (must be divisible by ``num_heads``).
        num_heads: attention heads.
        layer_scale_init: initial ``gamma``; ``None`` disables layer scale.
    """

    def __init__(self, dim: int, num_heads: int = 4, layer_scale_init: float | None = None) -> None:
        super().__init__()
        check_positive("SelfAttentionBlock dim", dim)
        self.attention = nn.Sequential(nn.LayerNorm(dim), MultiHeadSelfAttention(dim, num_heads))
        self.layer_scale: nn.Module = LayerScale2d(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale(apply_to_tokens(self.attention, x))
