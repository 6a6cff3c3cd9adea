"""The SwiftFormer / MobileOne hybrid space of thesis §7.4 (Table 7.4): 12^4 = 20,736 networks.

Skeleton
    SwiftFormer-XS (or -S): a stride-4 conv stem, four stages of 3/3/6/4 blocks at
    48/56/112/220 channels, stage 1 at the stem's resolution and stages 2-4 entered through
    a stride-2 3x3 conv-BN, final BatchNorm, pooling and a linear head.

Per stage, two variables
    ``conv_s`` in {``conv-enc``, ``mo``, ``mo-se``}: the convolution block of the stage,
    SwiftFormer's conv encoder, a MobileOne unit (depthwise 3x3 then pointwise
    re-parameterisable blocks, ``num_conv_branches`` over-parameterisation branches) or the
    same with Squeeze-and-Excitation in both blocks.
    ``attention_s`` in {``none``, ``last-1``, ``last-2``, ``all``}: how many of the stage's
    last blocks are attention blocks (``all``: every block).

Attention blocks
    A SwiftFormer attention block: a mini convolution block, efficient additive attention
    and an MLP, each residual. "The attention mechanism is preceded by a mini-convolution
    block of the same type as the other convolution blocks in the stage" (§7.4.2) is read
    as: for ``conv-enc`` SwiftFormer's own local representation (the conv encoder with an
    expansion of 1 instead of 4, which is what makes SwiftFormer-XS a member exactly), for
    ``mo`` / ``mo-se`` one MobileOne unit (with SE for ``mo-se``), which is already the
    smallest MobileOne block. So the block count of every stage is the same in every
    network; only the block types change.

Squeeze-and-Excitation
    MobileOne's SE bottleneck is ``C / 16``; SwiftFormer widths are not all multiples of 16
    (56, 220), so each stage uses the largest reduction ``r <= 16`` dividing its width
    (16, 14, 16, 11 for XS).

References in the space
    SwiftFormer-XS is :data:`SWIFTFORMER_XS` (``conv-enc``/``last-1`` everywhere) and has
    timm's ``swiftformer_xs`` parameter count: 3,475,360 at 1000 classes with
    ``distillation_head=True`` (timm always builds SwiftFormer's distillation head), and
    3,475,360 - 221,000 = 3,254,360 without it. The all-MobileOne network
    (:data:`ALL_MOBILEONE`, ``mo``/``none`` everywhere) is MobileOne's blocks in
    SwiftFormer's skeleton.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import nn

from models.backbone import BackboneSpec, HybridBackbone
from models.snapformer import SWIFTFORMER_VARIANTS
from models.zoo import swiftformer_spec
from nas.errors import NASError
from nas.space import Encoding
from nas.spaces.common import KeyValueSpace, check_option, check_resolution, check_stem_stride, check_widths

CONV_TYPES: tuple[str, ...] = ("conv-enc", "mo", "mo-se")
ATTENTION_CHOICES: tuple[str, ...] = ("none", "last-1", "last-2", "all")
MAX_SE_REDUCTION = 16

# Stage block and attention-block mini conv block (registered backbone block names) per type.
_BLOCKS: dict[str, tuple[str, str]] = {
    "conv-enc": ("conv_encoder", "local_representation"),
    "mo": ("mobileone", "mobileone"),
    "mo-se": ("mobileone_se", "mobileone_se"),
}

SWIFTFORMER_XS = " ".join(f"conv_{s}=conv-enc attention_{s}=last-1" for s in range(1, 5))
"""SwiftFormer-XS as an architecture string (with ``variant="xs"``)."""
ALL_MOBILEONE = " ".join(f"conv_{s}=mo attention_{s}=none" for s in range(1, 5))
"""MobileOne units in every block, no attention."""


def se_reduction(width: int) -> int:
    """The largest SE reduction ``r <= 16`` that divides ``width`` (16, MobileOne's, when it can)."""
    return max(r for r in range(1, MAX_SE_REDUCTION + 1) if width % r == 0)


class SwiftFormerHybridSpace(KeyValueSpace):
    """Table 7.4: conv block type and attention blocks of each SwiftFormer stage.

    The space has no twins (so :meth:`function_keys` keeps the default, every member its
    own key): every stage has at least three blocks, so its 12 (conv type, attention)
    choices build 12 stages with different parameter shapes, and no two encodings can
    share weights.

    Args:
        variant: SwiftFormer skeleton, ``xs`` (the thesis) or ``s``.
        num_conv_branches: over-parameterisation branches of the MobileOne blocks (the
            thesis searched with 4 and with 1).
        distillation_head: add SwiftFormer's second, averaged classifier.
        resolution: side of the square input images.
        stem_stride: the stem's stride (``None``: the published one); 1 or 2 keep more of a
            small image, so that 28-32 px photographs do not reach the last stage at 1 x 1.
        widths: channels of the four stages (``None``: the variant's, e.g. 48/56/112/220
            for XS); narrower stages make a CPU-sized version of the same space.
    """

    name = "swiftformer_hybrid"
    stem = "conv"
    stage_stride = 8  # three stride-2 stages (the first keeps the stem's resolution)

    def __init__(
        self,
        variant: str = "xs",
        num_conv_branches: int = 4,
        distillation_head: bool = False,
        resolution: int = 224,
        widths: Sequence[int] | None = None,
        stem_stride: int | None = None,
    ) -> None:
        check_option(self.name, "variant", variant, tuple(SWIFTFORMER_VARIANTS))
        if isinstance(num_conv_branches, bool) or not isinstance(num_conv_branches, int) or num_conv_branches < 1:
            raise NASError(f"Search space 'swiftformer_hybrid' needs num_conv_branches >= 1, got {num_conv_branches!r}.")
        self.variant = variant
        self.depths: tuple[int, ...] = SWIFTFORMER_VARIANTS[variant]["depths"]
        self.widths: tuple[int, ...] = SWIFTFORMER_VARIANTS[variant]["widths"] if widths is None else check_widths(self.name, widths)
        self.num_conv_branches = num_conv_branches
        self.distillation_head = bool(distillation_head)
        self.resolution = check_resolution(self.name, resolution)
        self.stem_stride = check_stem_stride(self.name, self.stem, stem_stride)
        # Attention blocks of each choice (rows) in each stage (columns).
        self._attention_blocks = torch.tensor([[0] * 4, [1] * 4, [2] * 4, list(self.depths)])

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(name for s in range(1, 5) for name in (f"conv_{s}", f"attention_{s}"))

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        return (CONV_TYPES, ATTENTION_CHOICES) * 4

    def signature(self) -> dict[str, object]:
        return {
            "name": self.name,
            "variant": self.variant,
            "widths": list(self.widths),
            "num_conv_branches": self.num_conv_branches,
            "distillation_head": self.distillation_head,
            "resolution": self.resolution,
            **self.stem_signature(),
        }

    def attention_blocks(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x 4`` attention blocks per stage of ``n x 8`` codes."""
        return self._attention_blocks[codes[:, 1::2], torch.arange(4)]

    def backbone_spec(self, encoding: Encoding) -> BackboneSpec:
        """The :class:`BackboneSpec` of one (validated) encoding."""
        attention = self.attention_blocks(torch.tensor([encoding]))[0].tolist()
        base = swiftformer_spec(self.depths, self.widths, attention, distillation_head=self.distillation_head)
        stages = []
        for stage, conv_code in zip(base.stages, encoding[0::2]):
            conv_type = CONV_TYPES[conv_code]
            block, local = _BLOCKS[conv_type]
            kwargs: dict[str, Any] = {}
            if conv_type != "conv-enc":
                kwargs = {"num_conv_branches": self.num_conv_branches, "se_reduction": se_reduction(stage.width)}
            stages.append(dataclasses.replace(stage, block=block, attention_local=local, block_kwargs=kwargs))
        return dataclasses.replace(base, stages=stages, stem_stride=self.stem_stride)

    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        """The train-time network ``B x 3 x H x W -> B x num_classes``."""
        return HybridBackbone(self.backbone_spec(self.validate(encoding)), num_classes=num_classes)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x 32``: one-hot (28) and the fraction of attention blocks in each stage (4)."""
        fraction = self.attention_blocks(codes).float() / torch.tensor(self.depths, dtype=torch.float32)
        return torch.cat([self.one_hot(codes), fraction], dim=1)
