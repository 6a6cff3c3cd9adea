"""The MOAT / MobileNetV2 / ViT hybrid cell space of thesis §7.2: 9^4 = 6,561 networks.

Cells (Figure 7.1)
    A cell is miniblock (a) then miniblock (b), each with its own residual connection,
    taken from {MBConv with SE, MBConv, self-attention, MLP, zero}; ``zero`` leaves only
    the residual (the miniblock is absent). Of the 25 ordered pairs, these 7 are kept as
    feasible (written ``a+b``):

    ================= ============================================================
    ``mbconv+zero``     MobileNetV2's inverted residual block
    ``mbconv_se+zero``  the same with SE (MobileNetV3 / EfficientNet block)
    ``mbconv+attention``    the MOAT block
    ``mbconv_se+attention`` the MOAT block with SE in its MBConv
    ``mbconv+mlp``      a conv token mixer with a transformer's channel MLP
    ``mbconv_se+mlp``   the same with SE (the third cell of the thesis' search result)
    ``attention+mlp``   the ViT / transformer block
    ================= ============================================================

    Why these: (a) must mix space, so it is an MBConv (with or without SE) or
    self-attention; an MLP or zero first would leave the cell without spatial mixing
    or, for ``zero+x``, duplicate ``x+zero`` (and ``zero+zero`` is the identity).
    (b) adds what (a) lacks: nothing (``zero``), global mixing (``attention``, MOAT) or
    channel mixing (``mlp``, the transformer recipe). An MBConv as (b) is excluded, since
    two MBConv miniblocks are two ``mbconv+zero`` cells, which depth already gives;
    after self-attention, (b) must be the MLP: attention alone has no channel MLP,
    attention twice is depth again, and attention then MBConv is the MOAT block reversed,
    none of the MBConv / MOAT / ViT patterns the space generalises.

    The two parallel cells (§7.2.1: "miniblocks (a) and (b) in parallel") are the MOAT
    cells with both miniblocks reading the same input, ``x + f_a(x) + f_b(x)``:
    ``mbconv|attention`` and ``mbconv_se|attention``.

Network
    tiny-MOAT-0-like: a stride-4 conv stem, four stages of 2/3/7/2 cells at 32/64/128/256
    channels (``stage s`` uses ``cell_s`` for all its cells), stages 2-4 entered through a
    stride-2 3x3 conv-BN so that every cell type, attention-first ones included, keeps
    its input's shape; a final BatchNorm, pooling and a linear head. MBConv expansion 4
    with an SE bottleneck of a quarter of its input width, attention heads of 32 channels,
    MLP ratio 4 (MOAT's settings).

References in the space
    :data:`MOAT_STYLE` (``mbconv+zero`` in stages 1-2 and MOAT blocks in 3-4, tiny-MOAT-0's
    layout), :data:`MOBILENETV2_STYLE` (inverted residuals everywhere) and
    :data:`VIT_STYLE` (transformer blocks everywhere).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.backbone import BackboneSpec, HybridBackbone, StageSpec, build_block
from nas.errors import NASError
from nas.space import Encoding
from nas.spaces.common import KeyValueSpace, check_resolution, check_stem_stride, check_widths

MINIBLOCKS: tuple[str, ...] = ("mbconv_se", "mbconv", "attention", "mlp", "zero")
_BACKBONE_BLOCKS = {"mbconv_se": "mbconv_se", "mbconv": "mbconv", "attention": "self_attention", "mlp": "mlp"}


@dataclass(frozen=True)
class CellType:
    """Miniblocks (a) and (b) of a cell, applied one after the other or in parallel."""

    first: str
    second: str
    parallel: bool = False

    @property
    def label(self) -> str:
        return f"{self.first}{'|' if self.parallel else '+'}{self.second}"


CELL_TYPES: tuple[CellType, ...] = (
    CellType("mbconv", "zero"),
    CellType("mbconv_se", "zero"),
    CellType("mbconv", "attention"),
    CellType("mbconv_se", "attention"),
    CellType("mbconv", "mlp"),
    CellType("mbconv_se", "mlp"),
    CellType("attention", "mlp"),
    CellType("mbconv", "attention", parallel=True),
    CellType("mbconv_se", "attention", parallel=True),
)
CELL_LABELS: tuple[str, ...] = tuple(cell.label for cell in CELL_TYPES)

MOAT_STYLE = "cell_1=mbconv+zero cell_2=mbconv+zero cell_3=mbconv+attention cell_4=mbconv+attention"
MOBILENETV2_STYLE = " ".join(f"cell_{s}=mbconv+zero" for s in range(1, 5))
VIT_STYLE = " ".join(f"cell_{s}=attention+mlp" for s in range(1, 5))


class MiniblockCell(nn.Module):
    """A cell of residual miniblocks: ``B x C x H x W -> B x C x H x W``.

    Args:
        dim: ``C``.
        cell: the miniblock pair.
        options: keyword arguments of each backbone block (``mbconv``, ``self_attention``...).
    """

    def __init__(self, dim: int, cell: CellType, options: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__()
        self.parallel = cell.parallel
        names = [_BACKBONE_BLOCKS[m] for m in (cell.first, cell.second) if m != "zero"]
        self.miniblocks = nn.ModuleList(build_block(name, dim, dim, 1, options.get(name, {})) for name in names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.parallel:
            # Each miniblock returns x + f(x); the parallel cell is x + f_a(x) + f_b(x).
            return self.miniblocks[0](x) + self.miniblocks[1](x) - x
        for miniblock in self.miniblocks:
            x = miniblock(x)
        return x


class MoatHybridSpace(KeyValueSpace):
    """§7.2: one of 9 cell types for each of the 4 stages.

    The space has no twins (so :meth:`function_keys` keeps the default, every member its
    own key): the nine cell types build cells of different parameter shapes (``zero`` only
    ends the two lone-MBConv cells) except the sequential and parallel MOAT cells, which
    compute different functions of the same residual miniblocks ``g`` (``g_b(g_a(x))``
    against ``g_a(x) + g_b(x) - x``).

    Args:
        widths: channels per stage (tiny-MOAT-0: 32/64/128/256).
        depths: cells per stage (tiny-MOAT-0: 2/3/7/2).
        head_dim: channels per attention head (MOAT: 32); must divide every width.
        expansion: MBConv hidden width as a multiple of its input.
        se_reduction: MBConv SE bottleneck is ``input width / se_reduction``.
        mlp_ratio: MLP hidden width as a multiple of the width.
        resolution: side of the square input images.
        stem_stride: the stem's stride (``None``: the published one); 1 or 2 keep more of a
            small image, so that 28-32 px photographs do not reach the last stage at 1 x 1.
    """

    name = "moat_hybrid"
    stem = "conv"
    stage_stride = 8  # three stride-2 stages (the first keeps the stem's resolution)

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (2, 3, 7, 2),
        head_dim: int = 32,
        expansion: float = 4.0,
        se_reduction: int = 4,
        mlp_ratio: float = 4.0,
        resolution: int = 224,
        stem_stride: int | None = None,
    ) -> None:
        self.widths = check_widths(self.name, widths)
        self.depths = tuple(depths) if isinstance(depths, Sequence) and not isinstance(depths, str) else ()
        if len(self.depths) != 4:
            raise NASError(f"Search space 'moat_hybrid' has 4 stages; got depths {depths!r}.")
        for width in self.widths:
            if width % head_dim or width % se_reduction:
                raise NASError(
                    f"Search space 'moat_hybrid' needs stage widths divisible by head_dim={head_dim} and "
                    f"se_reduction={se_reduction}, got width {width!r}."
                )
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.depths):
            raise NASError(f"Search space 'moat_hybrid' needs at least one cell per stage, got depths {self.depths}.")
        self.head_dim, self.expansion, self.se_reduction, self.mlp_ratio = head_dim, expansion, se_reduction, mlp_ratio
        self.resolution = check_resolution(self.name, resolution)
        self.stem_stride = check_stem_stride(self.name, self.stem, stem_stride)
        # Per cell type: [has MBConv, has SE, has attention, has MLP, parallel].
        self._components = torch.tensor(
            [
                [
                    cell.first.startswith("mbconv"),
                    cell.first == "mbconv_se",
                    "attention" in (cell.first, cell.second),
                    cell.second == "mlp",
                    cell.parallel,
                ]
                for cell in CELL_TYPES
            ],
            dtype=torch.float32,
        )

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(f"cell_{s}" for s in range(1, 5))

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        return (CELL_LABELS,) * 4

    def signature(self) -> dict[str, object]:
        return {
            "name": self.name,
            "widths": list(self.widths),
            "depths": list(self.depths),
            "head_dim": self.head_dim,
            "expansion": self.expansion,
            "se_reduction": self.se_reduction,
            "mlp_ratio": self.mlp_ratio,
            "resolution": self.resolution,
            **self.stem_signature(),
        }

    def _options(self, width: int) -> dict[str, dict[str, Any]]:
        return {
            "mbconv": {"expansion": self.expansion},
            "mbconv_se": {"expansion": self.expansion, "se_reduction": self.se_reduction},
            "self_attention": {"num_heads": width // self.head_dim},
            "mlp": {"mlp_ratio": self.mlp_ratio},
        }

    def backbone_spec(self, encoding: Encoding) -> BackboneSpec:
        """The :class:`BackboneSpec` of one (validated) encoding."""
        stages = [
            StageSpec(
                width,
                depth,
                block=functools.partial(MiniblockCell, cell=CELL_TYPES[code], options=self._options(width)),
                downsample="none" if index == 0 else "conv",
            )
            for index, (width, depth, code) in enumerate(zip(self.widths, self.depths, encoding))
        ]
        return BackboneSpec(stages=stages, stem="conv", final_norm=True, stem_stride=self.stem_stride)

    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        """The network ``B x 3 x H x W -> B x num_classes``."""
        return HybridBackbone(self.backbone_spec(self.validate(encoding)), num_classes=num_classes)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x 56``: one-hot (36) and, per stage, which components its cell has (5 x 4)."""
        return torch.cat([self.one_hot(codes), self._components[codes].flatten(1)], dim=1)
