"""Shapes, exact fusion and input validation of the generic blocks."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from models.blocks.attention import MultiHeadSelfAttention, SelfAttentionBlock
from models.blocks.layers import ConvBN, LayerScale2d
from models.blocks.mbconv import MBConv
from models.blocks.mlp import ConvMlp, MlpBlock
from models.blocks.moat import MOATBlock
from models.blocks.se import SqueezeExcite
from models.blocks.stems import ConvStem, conv_downsample


@pytest.mark.parametrize(
    ("module", "in_shape", "out_shape"),
    [
        (ConvBN(4, 8, 3, stride=2, groups=2, bias=True), (2, 4, 9, 9), (2, 8, 5, 5)),
        (ConvMlp(8, 16, 4), (2, 8, 5, 5), (2, 4, 5, 5)),
        (MlpBlock(8), (2, 8, 5, 5), (2, 8, 5, 5)),
        (MBConv(8, 8, use_se=True), (2, 8, 6, 6), (2, 8, 6, 6)),
        (MBConv(8, 16, stride=2), (2, 8, 6, 6), (2, 16, 3, 3)),
        (MOATBlock(16, num_heads=2, use_se=True), (2, 16, 4, 4), (2, 16, 4, 4)),
        (ConvStem(3, 16), (2, 3, 32, 32), (2, 16, 8, 8)),
        (conv_downsample(8, 12), (2, 8, 8, 8), (2, 12, 4, 4)),
    ],
    ids=["convbn", "convmlp", "mlp_block", "mbconv_se", "mbconv_down", "moat", "stem", "downsample"],
)
def test_fusable_blocks_keep_shape_and_fuse_exactly(check_fusion, module, in_shape, out_shape):
    fused = check_fusion(module, torch.randn(in_shape))
    assert fused(torch.randn(in_shape)).shape == out_shape
    assert not any(isinstance(m, (nn.BatchNorm2d, LayerScale2d)) for m in fused.modules())


def test_mbconv_residual_only_when_shapes_allow():
    assert MBConv(8, 8).use_residual
    assert not MBConv(8, 8, stride=2).use_residual
    assert not MBConv(8, 16).use_residual


def test_squeeze_excite_gates_channels_by_global_context():
    se = SqueezeExcite(16, reduction=4)
    assert se.reduce.out_channels == 4
    x = torch.randn(2, 16, 5, 5)
    gate = se(x) / x
    # One gate per (sample, channel), in (0, 1), shared by all positions.
    assert torch.allclose(gate, gate[..., :1, :1].expand_as(gate), atol=1e-5)
    assert bool(((gate > 0) & (gate < 1)).all())


def test_self_attention_is_permutation_equivariant_over_tokens():
    attention = MultiHeadSelfAttention(8, num_heads=2).eval()
    tokens = torch.randn(2, 6, 8)
    order = torch.randperm(6)
    assert torch.allclose(attention(tokens)[:, order], attention(tokens[:, order]), atol=1e-6)


def test_self_attention_block_mixes_all_positions():
    block = SelfAttentionBlock(8, num_heads=4).eval()
    x = torch.randn(1, 8, 4, 4, requires_grad=True)
    block(x)[0, :, 0, 0].sum().backward()
    # A global receptive field: the top-left output depends on every input position.
    assert bool((x.grad.abs().sum(dim=1) > 0).all())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MultiHeadSelfAttention(10, num_heads=4), "width 10 is not divisible by num_heads=4; valid head counts for width 10 are [1, 2, 5, 10]"),
        (lambda: SelfAttentionBlock(12, num_heads=5), "width 12 is not divisible by num_heads=5"),
        (lambda: MOATBlock(6, num_heads=4), "width 6 is not divisible by num_heads=4"),
        (lambda: SqueezeExcite(24, reduction=16), "SE reduction 16 does not divide the channel count 24"),
        (lambda: MBConv(6, 6, use_se=True, se_reduction=4), "SE reduction 4 does not divide the input width 6"),
        (lambda: MBConv(8, 8, stride=3), "stride must be 1 or 2, got 3"),
        (lambda: MBConv(0, 8), "in_channels must be a positive integer, got 0"),
        (lambda: MlpBlock(-4), "dim must be a positive integer, got -4"),
        (lambda: ConvStem(3, 1), "at least 2 output channels"),
    ],
)
def test_bad_block_configurations_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
