"""SnapFormer (thesis §8.3): SwiftFormer's macro-architecture with the searched attention.

Reading of Table 8.1
    "Layers" is the total number of blocks of a stage and the "ViT layers" are its last
    blocks (so XS stage 3 is 4 conv encoders then 2 attention blocks). With the published
    (distilled) classifier, two linear heads averaged as in SwiftFormer, this gives
    2,843,080 / 4,480,334 / 7,864,094 parameters at 1000 classes for XXS / XS / S, i.e. the
    2.84M / 4.48M / 7.86M of Tables 8.2-8.3. The other reading (conv layers plus ViT layers)
    gives 3.64M / 5.73M / 9.53M. Without the distillation head: 2.65M / 4.25M / 7.61M.

SwiftFormer with another attention
    :func:`swiftformer_with_attention` builds SwiftFormer-XS or -S with any
    :class:`~models.attention_cell.AttentionEncoding` as token mixer and the widths scaled by
    a coefficient, the networks of the ``attention`` search space (§8.2.1) and of Table 8.2
    (SwiftFormer-XS with the SnapFormer attention: 3,408,540 parameters, the table's 3.41M).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from torch import nn

from models.attention_cell import SNAPFORMER_ATTENTION, AttentionEncoding, attention_mixer
from models.backbone import BackboneSpec, HybridBackbone
from models.registry import register_model
from models.zoo import swiftformer_spec

SNAPFORMER_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "xxs": {"depths": (3, 3, 5, 4), "attention_blocks": (0, 2, 2, 2), "widths": (48, 56, 96, 192)},
    "xs": {"depths": (3, 3, 6, 4), "attention_blocks": (0, 2, 2, 2), "widths": (48, 64, 138, 232)},
    "s": {"depths": (3, 3, 9, 6), "attention_blocks": (0, 2, 2, 2), "widths": (48, 64, 182, 256)},
}
"""Table 8.1: blocks per stage (attention blocks included), attention blocks, widths."""

SWIFTFORMER_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "xs": {"depths": (3, 3, 6, 4), "widths": (48, 56, 112, 220)},
    "s": {"depths": (3, 3, 9, 6), "widths": (48, 64, 168, 224)},
}
"""SwiftFormer's configurations (one attention block ending every stage); XS is the
reference width list that the ``attention`` search space scales."""


def _variant(table: dict[str, dict[str, tuple[int, ...]]], variant: str, family: str) -> dict[str, tuple[int, ...]]:
    if variant not in table:
        raise ValueError(f"Unknown {family} variant {variant!r}; valid variants are {', '.join(map(repr, table))}.")
    return table[variant]


def snapformer_spec(
    variant: str,
    attention: AttentionEncoding = SNAPFORMER_ATTENTION,
    distillation_head: bool = True,
) -> BackboneSpec:
    """Description of SnapFormer ``variant`` (``"xxs"``, ``"xs"`` or ``"s"``).

    Args:
        variant: row group of Table 8.1.
        attention: token mixer of the attention blocks (default: the searched design).
        distillation_head: the second, averaged linear head of the published models.
    """
    config = _variant(SNAPFORMER_VARIANTS, variant, "SnapFormer")
    return swiftformer_spec(
        depths=config["depths"],
        widths=config["widths"],
        attention_blocks=config["attention_blocks"],
        token_mixer=attention_mixer(attention),
        distillation_head=distillation_head,
    )


def scale_widths(widths: Sequence[int], coefficient: float) -> tuple[int, ...]:
    """``widths`` multiplied by ``coefficient`` and rounded to the nearest integer (at least 2)."""
    if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float)) or not coefficient > 0:
        raise ValueError(f"width_coefficient must be a positive number, got {coefficient!r}.")
    # At least 2 channels: the conv stem halves the first width.
    return tuple(max(2, round(width * coefficient)) for width in widths)


def swiftformer_with_attention(
    attention: AttentionEncoding | None,
    variant: str = "xs",
    width_coefficient: float = 1.0,
    num_classes: int = 1000,
    distillation_head: bool = True,
    stem_stride: int | None = None,
) -> HybridBackbone:
    """SwiftFormer ``variant`` (``"xs"`` or ``"s"``) whose attention blocks use ``attention``
    (``None``: SwiftFormer's own efficient additive attention).

    ``B x 3 x H x W -> B x num_classes``.

    Args:
        attention: design of the token mixer in every attention block.
        variant: SwiftFormer configuration whose depths and widths are used.
        width_coefficient: multiplies every stage width (the ``attention`` search space finds it
            per design so that all networks have SwiftFormer-XS's latency).
        num_classes: classifier outputs.
        distillation_head: the second, averaged linear head of the published models.
        stem_stride: the conv stem's stride (``None``: SwiftFormer's 4; 2 or 1 for small images).
    """
    config = _variant(SWIFTFORMER_VARIANTS, variant, "SwiftFormer")
    spec = swiftformer_spec(
        depths=config["depths"],
        widths=scale_widths(config["widths"], width_coefficient),
        token_mixer=attention_mixer(attention) if attention is not None else None,
        distillation_head=distillation_head,
    )
    return HybridBackbone(dataclasses.replace(spec, stem_stride=stem_stride), num_classes=num_classes)


@register_model(timm_name="snapformer_xxs")
def snapformer_xxs(num_classes: int = 1000, distillation_head: bool = True) -> nn.Module:
    """SnapFormer-XXS: 2.84M parameters at 1000 classes (Table 8.3)."""
    return HybridBackbone(snapformer_spec("xxs", distillation_head=distillation_head), num_classes=num_classes)


@register_model(timm_name="snapformer_xs", benchmark=True)
def snapformer_xs(num_classes: int = 1000, distillation_head: bool = True) -> nn.Module:
    """SnapFormer-XS: 4.48M parameters at 1000 classes, SwiftFormer-XS's latency (Tables 8.2-8.3)."""
    return HybridBackbone(snapformer_spec("xs", distillation_head=distillation_head), num_classes=num_classes)


@register_model(timm_name="snapformer_s")
def snapformer_s(num_classes: int = 1000, distillation_head: bool = True) -> nn.Module:
    """SnapFormer-S: 7.86M parameters at 1000 classes, SwiftFormer-S's latency (Tables 8.2-8.3)."""
    return HybridBackbone(snapformer_spec("s", distillation_head=distillation_head), num_classes=num_classes)


@register_model(timm_name="nas_swiftformer_xs_snapattn", benchmark=True)
def swiftformer_xs_snapattn(num_classes: int = 1000, distillation_head: bool = True) -> nn.Module:
    """SwiftFormer-XS with the SnapFormer attention at SwiftFormer's widths (Table 8.2: 3.41M)."""
    return swiftformer_with_attention(
        SNAPFORMER_ATTENTION, "xs", num_classes=num_classes, distillation_head=distillation_head
    )


@register_model(timm_name="nas_swiftformer_s_snapattn")
def swiftformer_s_snapattn(num_classes: int = 1000, distillation_head: bool = True) -> nn.Module:
    """SwiftFormer-S with the SnapFormer attention at SwiftFormer's widths (Table 8.2: 6.01M)."""
    return swiftformer_with_attention(
        SNAPFORMER_ATTENTION, "s", num_classes=num_classes, distillation_head=distillation_head
    )
