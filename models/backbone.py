"""A stage-based hybrid ConvNet-ViT backbone built from a small description.

The network is ``stem -> 4 (or any number of) stages -> final norm -> pool -> linear head``,
the macro-architecture shared by MobileOne, SwiftFormer and SnapFormer (thesis §7.3-7.4,
§8.3.2). Each stage is described by a :class:`StageSpec`:

``StageSpec(width, depth, block="conv_encoder", attention_blocks=0, token_mixer=None,
attention_local=None, attention_kwargs={}, downsample="conv", block_kwargs={})``

* The stage has ``depth`` blocks at ``width`` channels. The first
  ``depth - attention_blocks`` are conv blocks of type ``block``; the last
  ``attention_blocks`` are :class:`~models.blocks.swiftformer.SwiftFormerBlock` s built as
  ``SwiftFormerBlock(width, token_mixer=token_mixer, local=..., **attention_kwargs)``.
* ``token_mixer: Callable[[int], nn.Module]`` maps the channel dim ``C`` to a module that
  maps tokens ``B x N x C -> B x N x C``; ``None`` means SwiftFormer's
  :class:`~models.blocks.swiftformer.EfficientAdditiveAttention`.
* ``attention_local`` is the conv part that opens each attention block: ``None`` for
  SwiftFormer's local representation, a block name (built like the stage's conv blocks,
  with ``block_kwargs``) or a ``C -> module`` callable.
* ``block`` is a name from :data:`STAGE_BLOCKS` (``conv_encoder``, ``local_representation``,
  ``mobileone``, ``mobileone_se``, ``mbconv``, ``mbconv_se``, ``moat``, ``self_attention``,
  ``mlp``; extend with :func:`register_stage_block`) called with ``block_kwargs``, or a
  ``C -> module`` callable for ``B x C x H x W -> B x C x H x W`` blocks.
* ``downsample`` says how the stage enters its resolution and width:
  ``"conv"`` (a stride-2 3x3 conv-BN first, SwiftFormer), ``"first_block"`` (the first
  conv block itself has stride 2 and changes the width; it counts in ``depth``, MobileOne),
  or ``"none"`` (same resolution; the width must equal the incoming width).
* A stage with ``depth == 0`` is skipped: no downsampling, the width carries over.

:class:`BackboneSpec` adds the stem (``"conv"``: two stride-2 conv-BN-ReLU, ``"mobileone"``:
a stride-2 :class:`~models.blocks.mobileone.MobileOneBlock`; ``stem_stride`` makes either
stride less for small images), its width, the final norm, an
optional distillation head and the input channels. Invalid descriptions raise ``ValueError``
at construction, naming the offending value and what is valid.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from models.blocks.attention import SelfAttentionBlock
from models.blocks.mbconv import MBConv
from models.blocks.mlp import MlpBlock
from models.blocks.moat import MOATBlock
from models.blocks.mobileone import MobileOneBlock, MobileOneUnit
from models.blocks.stems import CONV_STEM_STRIDES, ConvStem, conv_downsample
from models.blocks.swiftformer import BlockFactory, ConvEncoder, SwiftFormerBlock, TokenMixerFactory

StageBlockBuilder = Callable[..., nn.Module]
"""``(in_channels, out_channels, stride, **block_kwargs) -> module`` mapping
``B x in_channels x H x W -> B x out_channels x H/stride x W/stride``."""

STAGE_BLOCKS: dict[str, StageBlockBuilder] = {}
DOWNSAMPLES: tuple[str, ...] = ("conv", "first_block", "none")
STEMS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "conv": ConvStem,
    "mobileone": lambda in_channels, out_channels, stride: MobileOneBlock(in_channels, out_channels, 3, stride=stride),
}
"""``(in_channels, out_channels, stride) -> module``: each stem by name."""
#: Each stem's published stride and the strides it can take.
STEM_STRIDES: dict[str, tuple[int, tuple[int, ...]]] = {"conv": (4, tuple(CONV_STEM_STRIDES)), "mobileone": (2, (2, 1))}


def resolved_stem_stride(stem: str, stride: int | None) -> int:
    """``stride``, or the published stride of ``stem`` when it is ``None``."""
    return stride if stride is not None else STEM_STRIDES[stem][0]


def register_stage_block(name: str) -> Callable[[StageBlockBuilder], StageBlockBuilder]:
    """Make a block builder available to :class:`StageSpec` under ``name``."""

    def decorator(builder: StageBlockBuilder) -> StageBlockBuilder:
        if name in STAGE_BLOCKS:
            raise ValueError(f"Stage block {name!r} is already registered.")
        STAGE_BLOCKS[name] = builder
        return builder

    return decorator


def _constant_shape(name: str, in_channels: int, out_channels: int, stride: int) -> None:
    if in_channels != out_channels or stride != 1:
        raise ValueError(
            f"Block {name!r} keeps width and resolution, so it cannot map {in_channels} -> {out_channels} "
            f"channels with stride {stride}; use downsample='conv' for this stage, or a block that can "
            f"downsample ('mobileone', 'mobileone_se', 'mbconv', 'mbconv_se')."
        )


@register_stage_block("conv_encoder")
def _conv_encoder(in_channels: int, out_channels: int, stride: int, mlp_ratio: float = 4.0, kernel_size: int = 3) -> nn.Module:
    _constant_shape("conv_encoder", in_channels, out_channels, stride)
    return ConvEncoder(out_channels, hidden_dim=max(1, int(out_channels * mlp_ratio)), kernel_size=kernel_size)


@register_stage_block("local_representation")
def _local_representation(in_channels: int, out_channels: int, stride: int, kernel_size: int = 3) -> nn.Module:
    _constant_shape("local_representation", in_channels, out_channels, stride)
    return ConvEncoder(out_channels, hidden_dim=out_channels, kernel_size=kernel_size)


@register_stage_block("mobileone")
def _mobileone(in_channels: int, out_channels: int, stride: int, num_conv_branches: int = 1, se_reduction: int = 16) -> nn.Module:
    return MobileOneUnit(in_channels, out_channels, stride, num_conv_branches=num_conv_branches, se_reduction=se_reduction)


@register_stage_block("mobileone_se")
def _mobileone_se(in_channels: int, out_channels: int, stride: int, num_conv_branches: int = 1, se_reduction: int = 16) -> nn.Module:
    return MobileOneUnit(
        in_channels, out_channels, stride, num_conv_branches=num_conv_branches, use_se=True, se_reduction=se_reduction
    )


@register_stage_block("mbconv")
def _mbconv(in_channels: int, out_channels: int, stride: int, expansion: float = 4.0) -> nn.Module:
    return MBConv(in_channels, out_channels, stride, expansion=expansion)


@register_stage_block("mbconv_se")
def _mbconv_se(in_channels: int, out_channels: int, stride: int, expansion: float = 4.0, se_reduction: int = 4) -> nn.Module:
    return MBConv(in_channels, out_channels, stride, expansion=expansion, use_se=True, se_reduction=se_reduction)


@register_stage_block("moat")
def _moat(
    in_channels: int, out_channels: int, stride: int, num_heads: int = 4, expansion: float = 4.0, use_se: bool = False
) -> nn.Module:
    _constant_shape("moat", in_channels, out_channels, stride)
    return MOATBlock(out_channels, num_heads=num_heads, expansion=expansion, use_se=use_se)


@register_stage_block("self_attention")
def _self_attention(
    in_channels: int, out_channels: int, stride: int, num_heads: int = 4, layer_scale_init: float | None = None
) -> nn.Module:
    _constant_shape("self_attention", in_channels, out_channels, stride)
    return SelfAttentionBlock(out_channels, num_heads=num_heads, layer_scale_init=layer_scale_init)


@register_stage_block("mlp")
def _mlp(
    in_channels: int, out_channels: int, stride: int, mlp_ratio: float = 4.0, layer_scale_init: float | None = 1e-5
) -> nn.Module:
    _constant_shape("mlp", in_channels, out_channels, stride)
    return MlpBlock(out_channels, mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_block_choice(what: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, str):
        if value not in STAGE_BLOCKS:
            raise ValueError(f"Unknown {what} {value!r}; valid blocks are {', '.join(sorted(STAGE_BLOCKS))}, or a callable.")
        return
    if not callable(value):
        raise ValueError(f"{what} must be a block name ({', '.join(sorted(STAGE_BLOCKS))}) or a callable, got {value!r}.")


@dataclass(frozen=True)
class StageSpec:
    """One stage of a :class:`HybridBackbone` (see the module docstring for the semantics)."""

    width: int
    depth: int
    block: str | BlockFactory = "conv_encoder"
    attention_blocks: int = 0
    token_mixer: TokenMixerFactory | None = None
    attention_local: str | BlockFactory | None = None
    attention_kwargs: Mapping[str, Any] = field(default_factory=dict)
    downsample: str = "conv"
    block_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _is_int(self.width) or self.width < 1:
            raise ValueError(f"Stage width must be a positive integer, got {self.width!r}.")
        if not _is_int(self.depth) or self.depth < 0:
            raise ValueError(f"Stage depth must be a non-negative integer (0 skips the stage), got {self.depth!r}.")
        if not _is_int(self.attention_blocks) or not 0 <= self.attention_blocks <= self.depth:
            raise ValueError(
                f"attention_blocks must be an integer between 0 and the stage depth {self.depth}, "
                f"got {self.attention_blocks!r}."
            )
        _check_block_choice("stage block", self.block, allow_none=False)
        _check_block_choice("attention_local block", self.attention_local, allow_none=True)
        if self.token_mixer is not None and not callable(self.token_mixer):
            raise ValueError(
                f"token_mixer must be None or a callable mapping the width to a B x N x C module, got {self.token_mixer!r}."
            )
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"Unknown downsample {self.downsample!r}; valid choices are {', '.join(DOWNSAMPLES)}.")
        if self.downsample == "first_block" and self.depth > 0 and self.attention_blocks == self.depth:
            raise ValueError(
                "downsample='first_block' needs at least one conv block in the stage, but all "
                f"{self.depth} blocks are attention blocks; use downsample='conv' or fewer attention blocks."
            )

    @property
    def conv_blocks(self) -> int:
        """Number of conv blocks (the stage's first blocks)."""
        return self.depth - self.attention_blocks


@dataclass(frozen=True)
class BackboneSpec:
    """A whole :class:`HybridBackbone`: stem, stages, final norm and head options."""

    stages: Sequence[StageSpec]
    stem: str = "conv"
    stem_width: int | None = None  # defaults to the first stage's width
    final_norm: bool = True
    distillation_head: bool = False  # a second linear head averaged with the first (DeiT-style)
    in_channels: int = 3
    stem_stride: int | None = None  # None: the stem's published stride (STEM_STRIDES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("A backbone needs at least one stage, got zero stages.")
        for index, stage in enumerate(self.stages):
            if not isinstance(stage, StageSpec):
                raise ValueError(f"Stage {index} must be a StageSpec, got {type(stage).__name__}.")
        if self.stem not in STEMS:
            raise ValueError(f"Unknown stem {self.stem!r}; valid stems are {', '.join(STEMS)}.")
        strides = STEM_STRIDES[self.stem][1]
        if self.stem_stride is not None and self.stem_stride not in strides:
            raise ValueError(f"The {self.stem!r} stem takes a stem_stride of {', '.join(map(str, strides))}, got {self.stem_stride!r}.")
        if self.stem_width is not None and (not _is_int(self.stem_width) or self.stem_width < 1):
            raise ValueError(f"stem_width must be a positive integer, got {self.stem_width!r}.")
        if not _is_int(self.in_channels) or self.in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {self.in_channels!r}.")
        if all(stage.depth == 0 for stage in self.stages):
            raise ValueError("Every stage has depth 0; a backbone needs at least one block.")
        width = self.resolved_stem_width
        for index, stage in enumerate(self.stages):
            if stage.depth == 0:
                continue
            if stage.downsample == "none" and stage.width != width:
                raise ValueError(
                    f"Stage {index} has downsample='none' but changes the width from {width} to {stage.width}; "
                    "use downsample='conv' or 'first_block', or keep the width."
                )
            width = stage.width

    @property
    def resolved_stem_stride(self) -> int:
        return resolved_stem_stride(self.stem, self.stem_stride)

    @property
    def resolved_stem_width(self) -> int:
        return self.stem_width if self.stem_width is not None else self.stages[0].width


def _check_kwargs(name: str, builder: Callable[..., nn.Module], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    signature = inspect.signature(builder)
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        accepted = [p for p in list(signature.parameters)[len(args):]]
        raise ValueError(
            f"Block {name!r} does not accept the arguments {sorted(kwargs)}; its options are {accepted}."
        ) from None


def build_block(choice: str | BlockFactory, in_channels: int, out_channels: int, stride: int, kwargs: Mapping[str, Any]) -> nn.Module:
    """Instantiate a stage block from a registered name (with ``kwargs``) or a ``C -> module`` callable."""
    if isinstance(choice, str):
        builder = STAGE_BLOCKS[choice]
        _check_kwargs(choice, builder, (in_channels, out_channels, stride), kwargs)
        return builder(in_channels, out_channels, stride, **kwargs)
    _constant_shape(getattr(choice, "__name__", repr(choice)), in_channels, out_channels, stride)
    return choice(out_channels)


def _build_constant_block(choice: str, kwargs: Mapping[str, Any], dim: int) -> nn.Module:
    return build_block(choice, dim, dim, 1, kwargs)


class Stage(nn.Module):
    """Optional downsampling layer then a sequence of blocks: ``B x C_in x H x W -> B x C x H' x W'``."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def build_stage(spec: StageSpec, in_channels: int) -> Stage:
    """The :class:`Stage` for ``spec`` entered with ``in_channels`` channels."""
    if spec.depth == 0:
        return Stage(nn.Identity(), [])
    width = spec.width
    downsample: nn.Module = nn.Identity()
    if spec.downsample == "conv":
        downsample = conv_downsample(in_channels, width)
        in_channels = width
    blocks: list[nn.Module] = []
    for index in range(spec.conv_blocks):
        stride = 2 if spec.downsample == "first_block" and index == 0 else 1
        blocks.append(build_block(spec.block, in_channels, width, stride, spec.block_kwargs))
        in_channels = width
    local = spec.attention_local
    if isinstance(local, str):
        local = functools.partial(_build_constant_block, local, spec.block_kwargs)
    for _ in range(spec.attention_blocks):
        blocks.append(SwiftFormerBlock(width, token_mixer=spec.token_mixer, local=local, **dict(spec.attention_kwargs)))
    return Stage(downsample, blocks)


class HybridBackbone(nn.Module):
    """Image classifier ``B x C_in x H x W -> B x num_classes`` built from a :class:`BackboneSpec`.

    ``forward_features`` gives the normalised last feature map ``B x C x H/s x W/s``
    (``s = 32`` for four downsampling stages); ``forward_head`` pools and classifies.
    With ``num_classes == 0`` the head is the identity and the model returns pooled
    features ``B x C``.
    """

    def __init__(self, spec: BackboneSpec, num_classes: int = 1000) -> None:
        super().__init__()
        if not _is_int(num_classes) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}.")
        self.num_classes = num_classes
        width = spec.resolved_stem_width
        self.stem = STEMS[spec.stem](spec.in_channels, width, spec.resolved_stem_stride)
        stages = []
        for stage_spec in spec.stages:
            stages.append(build_stage(stage_spec, width))
            if stage_spec.depth > 0:
                width = stage_spec.width
        self.stages = nn.Sequential(*stages)
        self.num_features = width
        self.norm: nn.Module = nn.BatchNorm2d(width) if spec.final_norm else nn.Identity()
        self.head: nn.Module = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist: nn.Module | None = (
            nn.Linear(width, num_classes) if spec.distillation_head and num_classes > 0 else None
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C_in x H x W -> B x C x H/s x W/s``."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``B x C x h x w -> B x num_classes`` (global average pooling, then the linear head(s))."""
        pooled = features.mean(dim=(2, 3))
        logits = self.head(pooled)
        if self.head_dist is not None:
            logits = (logits + self.head_dist(pooled)) / 2
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the distillation head into the main head: the average of two linear maps is linear."""
        if self.head_dist is None:
            return
        self.head.weight.add_(self.head_dist.weight).mul_(0.5)
        self.head.bias.add_(self.head_dist.bias).mul_(0.5)
        self.head_dist = None
