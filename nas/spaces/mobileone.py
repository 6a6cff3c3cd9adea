"""The MobileOne-based ConvNet space of thesis §7.3 (Table 7.2), with its size constraints.

Variables (stage ``s`` = 1..4, base widths 64/128/256/512)
    ``depth_s`` in {0, 1, 2, 5, 8, 10} (MobileOne units), ``width_s`` in 0.25..4 step 0.25
    (multiplier of the base width), ``se`` (Squeeze-and-Excitation yes/no) and ``branches``
    (1 or 4 over-parameterisation branches of every non-stem block).

Constraints
    Width multipliers are non-decreasing from stage to stage (Table 7.2's "≥ Stage s-1"; a
    multiplier, not a width: widths then at least double from stage to stage). Depths are
    free (MobileOne-S0 has 2/8/10/1). ``min_depth <= sum(depth_s) <= max_depth`` (19..22)
    and ``min_params <=`` fused (inference-time) parameters ``<= max_params``
    (0.86M..1.26M) with a ``params_num_classes``-way head (10, Imagenette).

How networks are built (``zero_depth="reference"``, ``se_placement="mobileone"``, defaults)
    The thesis' variables are the arguments of the reference MobileOne implementation
    (``num_blocks_per_stage``, ``width_multipliers``, ``use_se``, ``num_conv_branches``)
    and the networks are built the way it builds them:

    * stem: a stride-2 MobileOne block to ``min(64, 64 * width_1)`` channels (one branch);
    * ``se=yes`` puts SE in the last ``depth_3 // 2`` units of stage 3 and in every unit of
      stage 4 (MobileOne-S4's placement); both blocks of such a unit are gated;
    * a stage of depth 0 is *not* removed: the reference builds its stage from the
      strides ``[2] + [1] * (depth - 1)``, which is one stride-2 unit for depth 0, and that
      unit has SE whatever ``se`` says (its SE test ``index >= depth - se_units`` reads
      ``0 >= 0``). Depth 0 counts as 0 in the depth constraint, and the head sees
      ``512 * width_4`` channels whatever ``depth_4`` is;
    * head: global average pooling and a linear layer (no final norm).

Size: 55,846 architectures (the thesis reports 55,870)
    Of the 3,876 non-decreasing multiplier tuples x 247 depth tuples of total 19..22 x 2
    SE choices (1,914,744), 27,923 lie in the parameter window; the branch count does not
    change the fused network, so each of them counts twice. The 24 missing architectures
    (12 pairs, 0.04%) are what a small difference in parameter counting explains: the
    window cuts through a dense region, with 13 (depth, width, SE) combinations within 102
    parameters below 860,000 and 13 within 190 above 1,260,000, so counting ~100-200
    parameters differently (e.g. in the classifier of the original tool) moves the total
    by this much. The other readings are much further: SE in every unit 53,608; depth-0
    stages removed (``zero_depth="skip"``) 74,894; both 71,336; SE as ``se`` says in
    depth-0 units 58,704.

Twins
    Distinct encodings can build the same network (a depth-0 stage built like a gated
    depth-1 one, an ``se`` with nothing to gate, ...): 44,642 of the 55,846 members are
    distinct networks; :meth:`MobileOneSpace.function_keys` says which and why.

Alternatives (constructor options)
    ``zero_depth="skip"`` removes depth-0 stages (the width carries over, the head follows
    the last built stage); ``se_placement="all"`` gates every unit of every stage. MobileOne-S0
    (:data:`MOBILEONE_S0`, 4,278,522 / 1,063,754 parameters at 10 classes, timm's numbers) is
    a member under every option.

Fused parameters are computed analytically and vectorised (:meth:`fused_parameters`),
which is what makes the enumeration fast: depth tuples and non-decreasing multiplier
tuples are enumerated separately and their parameter counts combined by broadcasting.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
from torch import nn

from models.backbone import BackboneSpec, HybridBackbone, StageSpec
from models.zoo import MOBILEONE_BASE_WIDTHS
from nas.errors import NASError
from nas.space import Encoding
from nas.spaces.common import KeyValueSpace, check_option, check_resolution, check_stem_stride

DEPTHS: tuple[int, ...] = (0, 1, 2, 5, 8, 10)
MULTIPLIERS: tuple[float, ...] = tuple(0.25 * i for i in range(1, 17))
BRANCHES: tuple[int, ...] = (1, 4)
ZERO_DEPTH_MODES: tuple[str, ...] = ("reference", "skip")
SE_PLACEMENTS: tuple[str, ...] = ("mobileone", "all")
SE_REDUCTION = 16
STEM_MAX_WIDTH = 64

MOBILEONE_S0 = "depth_1=2 width_1=0.75 depth_2=8 width_2=1 depth_3=10 width_3=1 depth_4=1 width_4=2 se=no branches=4"
"""MobileOne-S0 as an architecture string of the space."""

_DEPTH_COLUMNS = [0, 2, 4, 6]
_WIDTH_COLUMNS = [1, 3, 5, 7]
_SE_COLUMN, _BRANCH_COLUMN = 8, 9


def _se_parameters(channels: torch.Tensor) -> torch.Tensor:
    """Parameters of an SE gate on ``channels`` (two biased 1x1 convs through ``C/16``)."""
    hidden = channels // SE_REDUCTION
    return 2 * channels * hidden + hidden + channels


class MobileOneSpace(KeyValueSpace):
    """Table 7.2: MobileOne depth, width, SE and branches, filtered by depth and size.

    Args:
        min_depth, max_depth: bounds of the total number of units (thesis: 19, 22).
        min_params, max_params: bounds of the fused parameter count (thesis: 0.86M, 1.26M).
        params_num_classes: classifier size the parameter bounds are counted with.
        zero_depth: ``reference`` (a depth-0 stage is one SE unit, as the reference
            implementation builds it) or ``skip`` (the stage is removed).
        se_placement: ``mobileone`` (last half of stage 3, all of stage 4) or ``all``.
        resolution: side of the square input images.
        stem_stride: the stem's stride (``None``: the published one); 1 or 2 keep more of a
            small image, so that 28-32 px photographs do not reach the last stage at 1 x 1.
    """

    name = "mobileone"
    stem = "mobileone"
    stage_stride = 16  # four stride-2 stages

    def __init__(
        self,
        min_depth: int = 19,
        max_depth: int = 22,
        min_params: int = 860_000,
        max_params: int = 1_260_000,
        params_num_classes: int = 10,
        zero_depth: str = "reference",
        se_placement: str = "mobileone",
        resolution: int = 224,
        stem_stride: int | None = None,
    ) -> None:
        check_option(self.name, "zero_depth mode", zero_depth, ZERO_DEPTH_MODES)
        check_option(self.name, "se_placement", se_placement, SE_PLACEMENTS)
        for what, value in (
            ("min_depth", min_depth),
            ("max_depth", max_depth),
            ("min_params", min_params),
            ("max_params", max_params),
            ("params_num_classes", params_num_classes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise NASError(f"Search space 'mobileone' needs a non-negative integer {what}, got {value!r}.")
        if min_depth > max_depth or min_params > max_params:
            raise NASError(
                f"Search space 'mobileone' has empty bounds: depth {min_depth}..{max_depth}, fused parameters "
                f"{min_params:,}..{max_params:,}; each lower bound must not exceed its upper bound."
            )
        if zero_depth == "skip" and min_depth < 1:
            raise NASError(
                "Search space 'mobileone' with zero_depth='skip' needs min_depth >= 1 (a network needs a stage), "
                f"got {min_depth}."
            )
        self.min_depth, self.max_depth = min_depth, max_depth
        self.min_params, self.max_params = min_params, max_params
        self.params_num_classes = params_num_classes
        self.zero_depth = zero_depth
        self.se_placement = se_placement
        self.resolution = check_resolution(self.name, resolution)
        self.stem_stride = check_stem_stride(self.name, self.stem, stem_stride)
        self._depth_values = torch.tensor(DEPTHS)
        self._base = torch.tensor(MOBILEONE_BASE_WIDTHS)
        _ = self.all_codes  # an impossible constraint set fails here, with the bounds named

    # ------------------------------------------------------------------ variables
    @property
    def variable_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for stage in range(1, 5):
            names += [f"depth_{stage}", f"width_{stage}"]
        return (*names, "se", "branches")

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        return (DEPTHS, MULTIPLIERS) * 4 + ((False, True), BRANCHES)

    @property
    def enumerable(self) -> bool:
        return True  # through the factorised enumeration below, whatever the raw size

    def signature(self) -> dict[str, object]:
        return {
            "name": self.name,
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "min_params": self.min_params,
            "max_params": self.max_params,
            "params_num_classes": self.params_num_classes,
            "zero_depth": self.zero_depth,
            "se_placement": self.se_placement,
            "resolution": self.resolution,
            **self.stem_signature(),
        }

    # ------------------------------------------------------------------ structure
    def _decode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Depths ``n x 4``, widths in channels ``n x 4`` and SE flags ``n`` of ``n x 10`` codes."""
        depths = self._depth_values[codes[:, _DEPTH_COLUMNS]]
        widths = self._base * (codes[:, _WIDTH_COLUMNS] + 1) // 4
        return depths, widths, codes[:, _SE_COLUMN].bool()

    def _units(self, stage: int, depth: torch.Tensor, se: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Built units and SE-gated units (the stage's last ones) of ``stage`` (0-based), broadcast."""
        if self.se_placement == "all" or stage == 3:
            se_units = depth
        elif stage == 2:
            se_units = depth // 2
        else:
            se_units = torch.zeros_like(depth)
        se_units = torch.where(se, se_units, torch.zeros_like(se_units))
        if self.zero_depth == "skip":
            return depth, se_units
        empty = depth == 0
        return depth.clamp(min=1), torch.where(empty, torch.ones_like(se_units), se_units)

    def _parameters(self, depths: torch.Tensor, widths: torch.Tensor, se: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Fused parameter counts for broadcastable depths ``... x 4``, widths ``... x 4``, SE ``...``."""
        channels = widths[..., 0].clamp(max=STEM_MAX_WIDTH)
        total = 28 * channels  # stem: 3x3 conv from RGB with bias
        for stage in range(4):
            width = widths[..., stage]
            units, se_units = self._units(stage, depths[..., stage], se)
            built = units >= 1
            # First unit: depthwise 3x3 (+bias) on the incoming width, pointwise to the stage width.
            first = 10 * channels + channels * width + width
            first = first + torch.where(se_units >= units, _se_parameters(channels) + _se_parameters(width), 0)
            rest = (units - 1).clamp(min=0)
            total = total + torch.where(built, first, 0) + rest * width * (width + 11)
            total = total + torch.minimum(se_units, rest) * 2 * _se_parameters(width)
            channels = torch.where(built, width, channels)
        return total + channels * num_classes + num_classes

    def fused_parameters(self, codes: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
        """``n`` int64 fused (inference-time) parameter counts of ``n x 10`` codes, computed analytically.

        ``num_classes`` defaults to ``params_num_classes``, the size the constraint uses.
        """
        depths, widths, se = self._decode(codes)
        return self._parameters(depths, widths, se, self.params_num_classes if num_classes is None else num_classes)

    # ------------------------------------------------------------------ constraints
    def valid_mask(self, codes: torch.Tensor) -> torch.Tensor:
        depths, _, _ = self._decode(codes)
        total = depths.sum(dim=1)
        monotone = (codes[:, _WIDTH_COLUMNS].diff(dim=1) >= 0).all(dim=1)
        params = self.fused_parameters(codes)
        return (
            (total >= self.min_depth)
            & (total <= self.max_depth)
            & monotone
            & (params >= self.min_params)
            & (params <= self.max_params)
        )

    def violation(self, encoding: Encoding) -> str | None:
        codes = torch.tensor([encoding])
        depths, _, _ = self._decode(codes)
        total = int(depths.sum())
        if not self.min_depth <= total <= self.max_depth:
            return f"its total depth {total} is outside {self.min_depth}..{self.max_depth}"
        multipliers = [MULTIPLIERS[encoding[c]] for c in _WIDTH_COLUMNS]
        if multipliers != sorted(multipliers):
            return f"its width multipliers {'/'.join(format(m, 'g') for m in multipliers)} decrease between stages"
        params = int(self.fused_parameters(codes)[0])
        if not self.min_params <= params <= self.max_params:
            return (
                f"it has {params:,} fused parameters at {self.params_num_classes} classes, outside "
                f"{self.min_params:,}..{self.max_params:,}"
            )
        return None

    def enumerate_codes(self) -> torch.Tensor:
        depth_codes = torch.cartesian_prod(*[torch.arange(len(DEPTHS))] * 4)
        depth_totals = self._depth_values[depth_codes].sum(dim=1)
        depth_codes = depth_codes[(depth_totals >= self.min_depth) & (depth_totals <= self.max_depth)]
        width_codes = torch.cartesian_prod(*[torch.arange(len(MULTIPLIERS))] * 4)
        width_codes = width_codes[(width_codes.diff(dim=1) >= 0).all(dim=1)]
        se = torch.tensor([False, True])
        params = self._parameters(  # depth tuples x width tuples x SE
            self._depth_values[depth_codes][:, None, None, :],
            (self._base * (width_codes + 1) // 4)[None, :, None, :],
            se[None, None, :],
            self.params_num_classes,
        )
        d, w, s = ((params >= self.min_params) & (params <= self.max_params)).nonzero(as_tuple=True)
        if d.numel() == 0:
            raise NASError(
                f"Search space 'mobileone' is empty: no architecture has a total depth in {self.min_depth}..{self.max_depth} "
                f"and {self.min_params:,}..{self.max_params:,} fused parameters at {self.params_num_classes} classes; "
                "widen the bounds."
            )
        codes = torch.empty(d.numel(), len(BRANCHES), self.num_variables, dtype=torch.long)
        codes[:, :, _DEPTH_COLUMNS] = depth_codes[d][:, None, :]
        codes[:, :, _WIDTH_COLUMNS] = width_codes[w][:, None, :]
        codes[:, :, _SE_COLUMN] = s[:, None]
        codes[:, :, _BRANCH_COLUMN] = torch.arange(len(BRANCHES))
        return codes.reshape(-1, self.num_variables)

    # ------------------------------------------------------------------ networks
    def backbone_spec(self, encoding: Encoding) -> BackboneSpec:
        """The :class:`BackboneSpec` of one (validated) encoding."""
        codes = torch.tensor([encoding])
        depths, widths, se = self._decode(codes)
        kwargs: dict[str, Any] = {"num_conv_branches": BRANCHES[encoding[_BRANCH_COLUMN]]}
        stages: list[StageSpec] = []
        for stage in range(4):
            units, se_units = (int(t[0]) for t in self._units(stage, depths[:, stage], se))
            width = int(widths[0, stage])
            plain = units - se_units
            if plain:
                stages.append(StageSpec(width, plain, block="mobileone", downsample="first_block", block_kwargs=kwargs))
            if se_units:
                downsample = "none" if plain else "first_block"
                stages.append(StageSpec(width, se_units, block="mobileone_se", downsample=downsample, block_kwargs=kwargs))
        return BackboneSpec(
            stages=stages, stem="mobileone", stem_width=min(STEM_MAX_WIDTH, int(widths[0, 0])), final_norm=False, stem_stride=self.stem_stride
        )

    def _stage_parts(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x 8 x 4`` (block, width, units, downsample) of the :class:`StageSpec` s that
        :meth:`backbone_spec` appends for ``n x 10`` codes, in its order, the empty ones last
        and zeroed: block 0 is ``mobileone``, 1 ``mobileone_se``; downsample 1 is
        ``first_block``, 0 ``none``."""
        depths, widths, se = self._decode(codes)
        parts: list[torch.Tensor] = []
        for stage in range(4):
            units, se_units = self._units(stage, depths[:, stage], se)
            plain = units - se_units
            width = widths[:, stage]
            ones = torch.ones_like(width)
            parts.append(torch.stack([torch.zeros_like(width), width, plain, ones], dim=1))
            # The gated units continue the plain ones' stage, or open it when there are none.
            parts.append(torch.stack([ones, width, se_units, (plain == 0).long()], dim=1))
        stacked = torch.stack(parts, dim=1)
        # backbone_spec appends only non-empty parts, so the Sequential index of a part (its
        # parameters' names) is its rank among the non-empty ones: compact them stably.
        empty = stacked[..., 2] == 0
        order = torch.sort(empty.long(), dim=1, stable=True).indices
        compact = torch.gather(stacked, 1, order[..., None].expand_as(stacked))
        return torch.where(torch.gather(empty, 1, order)[..., None], 0, compact)

    @cached_property
    def _function_ids(self) -> torch.Tensor:
        """``N`` ids over :attr:`all_codes`, equal exactly when the members build the same network."""
        codes = self.all_codes
        stem = self._decode(codes)[1][:, :1].clamp(max=STEM_MAX_WIDTH)
        # Everything backbone_spec passes to HybridBackbone: stem width, branch count, stages.
        rows = torch.cat([stem, codes[:, _BRANCH_COLUMN : _BRANCH_COLUMN + 1], self._stage_parts(codes).flatten(1)], dim=1)
        return torch.unique(rows, dim=0, return_inverse=True)[1]

    def function_keys(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` keys of ``n x 10`` member codes, equal exactly when :meth:`to_module` builds the
        same network (same :class:`BackboneSpec`: same modules, parameter names and shapes).

        Twins (distinct members building the same network) come from the ways a stage is built:

        * ``zero_depth="reference"``: a depth-0 stage is one SE unit, which is also what a
          depth-1 stage is when ``se`` gates all its units: with ``se_placement="mobileone"``
          ``depth_4=0`` and ``depth_4=1, se=yes`` are twins (stage 3 gates only its last
          ``depth_3 // 2`` units, so no depth-1 stage 3 is gated); with ``"all"`` any stage's
          ``depth_s=0`` and ``depth_s=1, se=yes``. And ``se`` changes nothing when no unit
          it could gate is built (``mobileone``: ``depth_4=0`` and ``depth_3`` 0 or 1),
          making ``se=no`` and ``se=yes`` twins there. The total depth differs between such
          twins, but it only constrains the encoding, not the network;
        * ``zero_depth="skip"``: a depth-0 stage is removed, so its width multiplier is
          irrelevant (the first one still sizes the stem, ``min(64, 64 * width_1)``);
          ``se`` is irrelevant when no gated stage is built; and the same sequence of
          built stages can come from different stage indices (``128 * 2 = 256 * 1``
          channels from stage 2 or stage 3, e.g. ``depth_2=8, depth_3=0`` with
          ``width_2=2`` and ``depth_2=0, depth_3=8`` with ``width_3=1``) when the SE
          placement agrees.

        ``branches`` never makes twins: one and four branches fuse into the same inference
        network, but train with different parameters (and shapes). Distinct functions /
        members: 44,642 / 55,846 (``reference``, ``mobileone``, the defaults), 42,588 /
        53,608 (``reference``, ``all``), 34,540 / 74,894 (``skip``, ``mobileone``) and
        33,204 / 71,336 (``skip``, ``all``). The keys are the classes of the
        :class:`StageSpec` list, computed for the whole space at once and cached.
        """
        index = self.index_of(codes)
        if bool((index < 0).any()):
            raise NASError("function_keys takes members of the mobileone space only; some codes are not members.")
        return self._function_ids[index]

    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        """The train-time MobileOne network ``B x 3 x H x W -> B x num_classes``."""
        return HybridBackbone(self.backbone_spec(self.validate(encoding)), num_classes=num_classes)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x 102``: one-hot (92), depths / 10 and multipliers / 4 per stage (8), total depth / 40 and
        fused parameters / ``max_params`` (2)."""
        depths, _, _ = self._decode(codes)
        multipliers = (codes[:, _WIDTH_COLUMNS] + 1).float() / 16
        numeric = [
            depths.float() / max(DEPTHS),
            multipliers,
            depths.sum(dim=1, keepdim=True).float() / (4 * max(DEPTHS)),
            self.fused_parameters(codes).float().unsqueeze(1) / max(self.max_params, 1),
        ]
        return torch.cat([self.one_hot(codes), *numeric], dim=1)
