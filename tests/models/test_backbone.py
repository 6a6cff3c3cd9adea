"""The stage-based backbone description, the model registry and timm registration."""
from __future__ import annotations

import functools
import re

import pytest
import timm
import torch
from torch import nn

import models
from models.backbone import BackboneSpec, HybridBackbone, StageSpec
from models.blocks.attention import MultiHeadSelfAttention
from models.blocks.mobileone import MobileOneUnit
from models.blocks.swiftformer import ConvEncoder, EfficientAdditiveAttention, SwiftFormerBlock
from models.profiling import count_parameters
from models.zoo import mobileone_spec, swiftformer_spec


def _blocks(model: HybridBackbone, stage: int) -> list[nn.Module]:
    return list(model.stages[stage].blocks)


def test_stage_mixes_conv_blocks_and_attention_blocks_with_a_token_mixer():
    mixer = functools.partial(MultiHeadSelfAttention, num_heads=2)
    spec = BackboneSpec(
        stages=[
            StageSpec(8, 2, downsample="none"),
            StageSpec(16, 3, block="mobileone", attention_blocks=2, token_mixer=mixer, attention_local="mobileone",
                      downsample="first_block", block_kwargs={"num_conv_branches": 2}),
            StageSpec(16, 2, attention_blocks=2),
        ],
    )
    model = HybridBackbone(spec, num_classes=5)
    first, second, third = (_blocks(model, i) for i in range(3))
    assert [type(b) for b in first] == [ConvEncoder, ConvEncoder]
    assert [type(b) for b in second] == [MobileOneUnit, SwiftFormerBlock, SwiftFormerBlock]
    assert second[0].depthwise.stride == 2 and second[0].pointwise.out_channels == 16
    assert all(isinstance(b.token_mixer, MultiHeadSelfAttention) and isinstance(b.local, MobileOneUnit) for b in second[1:])
    assert second[1].local.depthwise.num_conv_branches == 2
    assert all(isinstance(b.token_mixer, EfficientAdditiveAttention) and isinstance(b.local, ConvEncoder) for b in third)
    assert isinstance(model.stages[2].downsample, nn.Module) and model.num_features == 16
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_hybrid_backbone_fuses_exactly(check_fusion):
    spec = BackboneSpec(
        stem="mobileone",
        stages=[
            StageSpec(16, 2, block="mobileone_se", downsample="first_block", attention_blocks=1, attention_local="mobileone_se"),
            StageSpec(32, 2, block="mbconv_se", downsample="first_block"),
            StageSpec(32, 1, block="moat", block_kwargs={"num_heads": 2}, downsample="none"),
            StageSpec(48, 2, block="mlp", attention_blocks=1, token_mixer=functools.partial(MultiHeadSelfAttention, num_heads=4)),
        ],
        distillation_head=True,
    )
    check_fusion(HybridBackbone(spec, num_classes=7), torch.randn(2, 3, 32, 32))


def test_depth_zero_stage_is_skipped_and_width_carries_over():
    spec = mobileone_spec(depths=(1, 0, 2, 1), widths=(16, 32, 48, 64))
    model = HybridBackbone(spec, num_classes=3)
    assert len(_blocks(model, 1)) == 0
    assert _blocks(model, 2)[0].depthwise.in_channels == 16
    # Three downsampling stages after the stride-2 stem: 64 -> 4.
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 64, 4, 4)


def test_custom_block_factory_and_feature_only_head():
    spec = BackboneSpec(stages=[StageSpec(8, 2, block=lambda dim: nn.Conv2d(dim, dim, 1), downsample="none")])
    model = HybridBackbone(spec, num_classes=0)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 8)


def test_swiftformer_spec_attention_blocks_per_stage():
    spec = swiftformer_spec(depths=(3, 3, 4, 4), widths=(16, 24, 32, 40), attention_blocks=(0, 2, 2, 2))
    assert [s.attention_blocks for s in spec.stages] == [0, 2, 2, 2]
    assert [s.downsample for s in spec.stages] == ["none", "conv", "conv", "conv"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BackboneSpec(stages=[]), "at least one stage, got zero stages"),
        (lambda: StageSpec(16, -1), "depth must be a non-negative integer (0 skips the stage), got -1"),
        (lambda: StageSpec(0, 2), "width must be a positive integer, got 0"),
        (lambda: StageSpec(16, 2, attention_blocks=3), "between 0 and the stage depth 2, got 3"),
        (lambda: StageSpec(16, 2, block="resnet"), "Unknown stage block 'resnet'; valid blocks are conv_encoder"),
        (lambda: StageSpec(16, 2, downsample="pool"), "Unknown downsample 'pool'; valid choices are conv, first_block, none"),
        (lambda: StageSpec(16, 2, token_mixer="mhsa"), "token_mixer must be None or a callable"),
        (lambda: StageSpec(16, 1, attention_blocks=1, downsample="first_block"), "needs at least one conv block"),
        (lambda: BackboneSpec(stages=[StageSpec(16, 0)]), "Every stage has depth 0"),
        (lambda: BackboneSpec(stages=[StageSpec(16, 1), StageSpec(32, 1, downsample="none")]), "changes the width from 16 to 32"),
        (lambda: BackboneSpec(stages=[StageSpec(16, 1)], stem="patchify"), "Unknown stem 'patchify'; valid stems are conv, mobileone"),
        (lambda: HybridBackbone(BackboneSpec(stages=[StageSpec(16, 1, downsample="first_block")])), "Block 'conv_encoder' keeps width and resolution"),
        (lambda: HybridBackbone(BackboneSpec(stages=[StageSpec(16, 1, block="mobileone", block_kwargs={"heads": 2})])), "does not accept the arguments ['heads']; its options are ['num_conv_branches', 'se_reduction']"),
        (lambda: HybridBackbone(BackboneSpec(stages=[StageSpec(18, 1, block="moat", block_kwargs={"num_heads": 4})])), "width 18 is not divisible by num_heads=4"),
        (lambda: HybridBackbone(BackboneSpec(stages=[StageSpec(24, 1, block="mobileone_se")])), "SE reduction 16 does not divide the channel count 24"),
        (lambda: HybridBackbone(BackboneSpec(stages=[StageSpec(16, 1)]), num_classes=-1), "num_classes must be a non-negative integer, got -1"),
        (lambda: mobileone_spec(depths=(1, 2), widths=(16,)), "same length, got 2 and 1"),
        (lambda: swiftformer_spec(depths=(1, 2), widths=(16, 24), attention_blocks=(1,)), "one value per stage (2), got 1"),
    ],
)
def test_impossible_descriptions_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_registry_lists_models_and_rejects_unknown_names():
    assert {"mobileone_s0", "swiftformer_xs", "swiftformer_s"} <= set(models.list_models())
    with pytest.raises(ValueError, match=r"Unknown model 'mobileone_s9'; valid models are: .*mobileone_s0.*swiftformer_xs"):
        models.create_model("mobileone_s9")


def test_models_are_registered_with_timm_without_replacing_timm_models():
    ours = timm.create_model("nas_mobileone_s0", num_classes=10)
    assert isinstance(ours, HybridBackbone) and count_parameters(ours) == 4_278_522
    assert isinstance(timm.create_model("nas_swiftformer_xs", num_classes=10), HybridBackbone)
    assert not isinstance(timm.create_model("mobileone_s0", num_classes=10), HybridBackbone)
    assert {"nas_mobileone_s0", "nas_swiftformer_xs", "nas_swiftformer_s"} <= set(timm.list_models("nas_*"))
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("nas_swiftformer_s", pretrained=True)


@pytest.mark.parametrize(("stem", "stride", "side"), [("conv", None, 7), ("conv", 2, 14), ("conv", 1, 28), ("mobileone", None, 14), ("mobileone", 1, 28)])
def test_stem_stride_keeps_more_of_a_small_image(stem: str, stride: int | None, side: int, check_fusion) -> None:
    spec = BackboneSpec(stages=[StageSpec(8, 1, block="mobileone", downsample="none")], stem=stem, stem_width=8, stem_stride=stride)
    model = HybridBackbone(spec, num_classes=3)
    assert model.forward_features(torch.randn(2, 3, 28, 28)).shape == (2, 8, side, side)
    check_fusion(model, torch.randn(2, 3, 28, 28))  # the re-parameterised stem computes the same


def test_a_stem_stride_the_stem_cannot_take_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"The 'mobileone' stem takes a stem_stride of 2, 1, got 4"):
        BackboneSpec(stages=[StageSpec(8, 1)], stem="mobileone", stem_stride=4)
