"""Reference networks expressed as :class:`~models.backbone.BackboneSpec` descriptions.

Parameter counts agree exactly with timm's implementations (``tests/models``):
MobileOne-S0 5,293,272 train-time / 2,078,504 fused parameters at 1000 classes;
SwiftFormer-XS 3,475,360 and SwiftFormer-S 6,092,128 with ``distillation_head=True``
(timm always builds SwiftFormer's distillation head).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from models.backbone import BackboneSpec, HybridBackbone, StageSpec
from models.blocks.swiftformer import TokenMixerFactory
from models.registry import register_model

MOBILEONE_BASE_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)


def _per_stage(value: int | Sequence[int], stages: int, what: str) -> tuple[int, ...]:
    values = (value,) * stages if isinstance(value, int) else tuple(value)
    if len(values) != stages:
        raise ValueError(f"{what} must give one value per stage ({stages}), got {len(values)}: {values}.")
    return values


def mobileone_spec(
    depths: Sequence[int],
    widths: Sequence[int],
    num_conv_branches: int = 1,
    use_se: bool | Sequence[bool] = False,
    stem_width: int | None = None,
) -> BackboneSpec:
    """MobileOne: a MobileOneBlock stem, then stages of depthwise + pointwise MobileOne units.

    Every stage's first unit has stride 2 (overall stride 32). The stem width defaults to
    ``min(64, widths[0])`` as in MobileOne.

    Args:
        depths: units per stage.
        widths: channels per stage.
        num_conv_branches: over-parameterisation branches ``k`` of every non-stem block.
        use_se: Squeeze-and-Excitation in every unit, globally or per stage.
        stem_width: override the stem width.
    """
    if len(depths) != len(widths):
        raise ValueError(f"depths and widths must have the same length, got {len(depths)} and {len(widths)}.")
    se = (use_se,) * len(depths) if isinstance(use_se, bool) else tuple(use_se)
    if len(se) != len(depths):
        raise ValueError(f"use_se must give one value per stage ({len(depths)}), got {len(se)}.")
    stages = [
        StageSpec(
            width,
            depth,
            block="mobileone_se" if stage_se else "mobileone",
            downsample="first_block",
            block_kwargs={"num_conv_branches": num_conv_branches},
        )
        for depth, width, stage_se in zip(depths, widths, se)
    ]
    first_width = widths[0] if widths else 64
    return BackboneSpec(
        stages=stages,
        stem="mobileone",
        stem_width=stem_width if stem_width is not None else min(64, first_width),
        final_norm=False,
    )


def swiftformer_spec(
    depths: Sequence[int],
    widths: Sequence[int],
    attention_blocks: int | Sequence[int] = 1,
    token_mixer: TokenMixerFactory | None = None,
    distillation_head: bool = False,
) -> BackboneSpec:
    """SwiftFormer: conv stem (stride 4), stages of conv encoders ending in attention blocks.

    The first stage keeps the stem's resolution; the others start with a stride-2 conv-BN.

    Args:
        depths: blocks per stage (attention blocks included).
        widths: channels per stage.
        attention_blocks: how many of each stage's last blocks are attention blocks.
        token_mixer: ``C -> module`` on tokens ``B x N x C``; ``None`` is efficient additive attention.
        distillation_head: add the (averaged) distillation head of the reference models.
    """
    if len(depths) != len(widths):
        raise ValueError(f"depths and widths must have the same length, got {len(depths)} and {len(widths)}.")
    attention = _per_stage(attention_blocks, len(depths), "attention_blocks")
    stages = [
        StageSpec(
            width,
            depth,
            block="conv_encoder",
            attention_blocks=attn,
            token_mixer=token_mixer,
            downsample="none" if index == 0 else "conv",
        )
        for index, (depth, width, attn) in enumerate(zip(depths, widths, attention))
    ]
    return BackboneSpec(stages=stages, stem="conv", final_norm=True, distillation_head=distillation_head)


@register_model(timm_name="nas_mobileone_s0", benchmark=True)
def mobileone_s0(num_classes: int = 1000, num_conv_branches: int = 4) -> nn.Module:
    """MobileOne-S0 (Vasu et al., 2023): 4.28M train-time / 1.06M fused parameters at 10 classes."""
    spec = mobileone_spec(depths=(2, 8, 10, 1), widths=(48, 128, 256, 1024), num_conv_branches=num_conv_branches)
    return HybridBackbone(spec, num_classes=num_classes)


@register_model(timm_name="nas_swiftformer_xs", benchmark=True)
def swiftformer_xs(num_classes: int = 1000, distillation_head: bool = False) -> nn.Module:
    """SwiftFormer-XS (Shaker et al., 2023)."""
    spec = swiftformer_spec(depths=(3, 3, 6, 4), widths=(48, 56, 112, 220), distillation_head=distillation_head)
    return HybridBackbone(spec, num_classes=num_classes)


@register_model(timm_name="nas_swiftformer_s", benchmark=True)
def swiftformer_s(num_classes: int = 1000, distillation_head: bool = False) -> nn.Module:
    """SwiftFormer-S (Shaker et al., 2023)."""
    spec = swiftformer_spec(depths=(3, 3, 9, 6), widths=(48, 64, 168, 224), distillation_head=distillation_head)
    return HybridBackbone(spec, num_classes=num_classes)
