"""The MobileOne space of Table 7.2: its size, MobileOne-S0 inside it, analytic parameter
counts checked against real networks, and constraints that no member violates."""
from __future__ import annotations

import pytest
import torch

from models import create_model
from models.blocks.mobileone import MobileOneUnit
from models.blocks.se import SqueezeExcite
from models.profiling import count_parameters
from models.reparam import reparameterize_model
from nas.errors import NASError
from nas.spaces.mobileone import DEPTHS, MOBILEONE_S0, MobileOneSpace

OPTIONS = {
    ("reference", "mobileone"): 55_846,
    ("reference", "all"): 53_608,
    ("skip", "mobileone"): 74_894,
    ("skip", "all"): 71_336,
}


@pytest.fixture(scope="module")
def space() -> MobileOneSpace:
    return MobileOneSpace(resolution=32)


def _fused(model: torch.nn.Module) -> int:
    return count_parameters(reparameterize_model(model), trainable_only=False)


@pytest.mark.parametrize(("zero_depth", "se_placement"), list(OPTIONS))
def test_sizes_of_each_reading(zero_depth: str, se_placement: str) -> None:
    space = MobileOneSpace(zero_depth=zero_depth, se_placement=se_placement)
    assert space.size == OPTIONS[(zero_depth, se_placement)]
    assert space.raw_size == 6**4 * 16**4 * 4 and space.enumerable


def test_factorised_enumeration_agrees_with_the_row_wise_constraints(space: MobileOneSpace) -> None:
    generator = torch.Generator().manual_seed(0)
    raw = (torch.rand(200_000, space.num_variables, generator=generator) * space.cardinalities).long()
    # Bias half the draws towards non-decreasing widths so that members are drawn too.
    raw[::2, 1::2][:, :4] = torch.sort(raw[::2, 1::2][:, :4], dim=1).values
    mask = space.valid_mask(raw)
    assert mask.sum() > 50
    assert (space.index_of(raw) >= 0).eq(mask).all()


def test_mobileone_s0_is_a_member_with_timms_parameter_counts(space: MobileOneSpace) -> None:
    s0 = space.parse(MOBILEONE_S0)
    model = space.to_module(s0, num_classes=10)
    assert count_parameters(model) == 4_278_522
    assert _fused(model) == 1_063_754 == int(space.fused_parameters(torch.tensor([s0]))[0])
    reference = create_model("mobileone_s0", num_classes=10)
    assert [tuple(p.shape) for p in model.parameters()] == [tuple(p.shape) for p in reference.parameters()]
    for zero_depth, se_placement in OPTIONS:
        assert MobileOneSpace(zero_depth=zero_depth, se_placement=se_placement).index_of(torch.tensor([s0]))[0] >= 0


@pytest.mark.parametrize(("zero_depth", "se_placement"), [("reference", "mobileone"), ("skip", "all")])
def test_members_built_for_real_satisfy_the_constraints_and_the_analytic_count(zero_depth: str, se_placement: str) -> None:
    space = MobileOneSpace(zero_depth=zero_depth, se_placement=se_placement)
    codes = space.all_codes
    depth_codes = codes[:, [0, 2, 4, 6]]
    # Cover SE networks and depth-0 stages (the corner cases of the count) besides random members.
    picks = [
        codes[(codes[:, 8] == 1) & (depth_codes[:, 3] == 0)][0],
        codes[(codes[:, 8] == 0) & (depth_codes[:, 0] == 0)][0],
        codes[(codes[:, 8] == 1) & (depth_codes[:, 2] == DEPTHS.index(5))][-1],
        *space.sample(3, torch.Generator().manual_seed(1)),
    ]
    for row in picks:
        encoding = tuple(row.tolist())
        model = space.to_module(encoding, num_classes=10)
        fused = _fused(model)
        assert fused == int(space.fused_parameters(row[None])[0])
        assert space.min_params <= fused <= space.max_params
        described = space.describe(encoding)
        assert 19 <= sum(described[f"depth_{s}"] for s in range(1, 5)) <= 22
        multipliers = [described[f"width_{s}"] for s in range(1, 5)]
        assert multipliers == sorted(multipliers)


def _first_member(space: MobileOneSpace, **values: int) -> tuple[int, ...]:
    """The first member whose variables have the given codes."""
    codes = space.all_codes
    mask = torch.ones(codes.shape[0], dtype=torch.bool)
    for name, code in values.items():
        mask &= codes[:, space.variable_names.index(name)] == code
    return tuple(codes[mask][0].tolist())


def test_a_depth_zero_stage_is_one_se_unit_as_in_the_reference_implementation(space: MobileOneSpace) -> None:
    encoding = _first_member(space, depth_1=DEPTHS.index(0), se=0)
    units = [m for m in space.to_module(encoding).modules() if isinstance(m, MobileOneUnit)]
    nominal = sum(space.describe(encoding)[f"depth_{s}"] for s in range(1, 5))
    assert len(units) == nominal + 1
    assert isinstance(units[0].depthwise.se, SqueezeExcite)
    assert not any(isinstance(u.depthwise.se, SqueezeExcite) for u in units[1:])
    skipping = MobileOneSpace(zero_depth="skip")
    assert skipping.fused_parameters(torch.tensor([encoding]))[0] < space.fused_parameters(torch.tensor([encoding]))[0]


def test_se_gates_the_last_half_of_stage_3_and_all_of_stage_4(space: MobileOneSpace) -> None:
    encoding = _first_member(space, depth_1=DEPTHS.index(2), depth_3=DEPTHS.index(10), depth_4=DEPTHS.index(1), se=1)
    depth_2 = space.describe(encoding)["depth_2"]
    units = [m for m in space.to_module(encoding).modules() if isinstance(m, MobileOneUnit)]
    gated = [isinstance(u.pointwise.se, SqueezeExcite) and isinstance(u.depthwise.se, SqueezeExcite) for u in units]
    assert gated == [False] * (2 + depth_2 + 5) + [True] * (5 + 1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (MOBILEONE_S0.replace("depth_4=1", "depth_4=10"), "its total depth 30 is outside 19..22"),
        (MOBILEONE_S0.replace("width_3=1", "width_3=0.5"), "its width multipliers 0.75/1/0.5/2 decrease between stages"),
        (MOBILEONE_S0.replace("width_4=2", "width_4=4"), "it has 1,337,162 fused parameters at 10 classes, outside 860,000..1,260,000"),
    ],
)
def test_constraint_violations_are_explained(space: MobileOneSpace, text: str, reason: str) -> None:
    with pytest.raises(NASError, match=f"is outside search space 'mobileone': {reason}"):
        space.parse(text)


def test_bounds_that_exclude_everything_are_refused() -> None:
    with pytest.raises(NASError, match=r"'mobileone' is empty: no architecture .* 10..20 fused parameters"):
        MobileOneSpace(min_params=10, max_params=20)
    with pytest.raises(NASError, match="each lower bound must not exceed its upper bound"):
        MobileOneSpace(min_depth=23, max_depth=19)
    with pytest.raises(NASError, match="no zero_depth mode 'drop'; valid values are 'reference', 'skip'"):
        MobileOneSpace(zero_depth="drop")


def _changed(space: MobileOneSpace, encoding: tuple[int, ...], **values: int) -> tuple[int, ...]:
    """``encoding`` with some variables set to the given codes; it must be a member."""
    row = list(encoding)
    for name, code in values.items():
        row[space.variable_names.index(name)] = code
    assert space.index_of(torch.tensor([row]))[0] >= 0, f"{space.to_string(tuple(row))} is not a member"
    return tuple(row)


def _pair(space: MobileOneSpace, where: dict[str, int], **changes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The first member with the codes ``where`` whose variant with ``changes`` is a member
    too (the variables also set the parameter count, which must stay in the window)."""
    codes = space.all_codes
    mask = torch.ones(codes.shape[0], dtype=torch.bool)
    for name, code in where.items():
        mask &= codes[:, space.variable_names.index(name)] == code
    candidates = codes[mask]
    variants = candidates.clone()
    for name, code in changes.items():
        variants[:, space.variable_names.index(name)] = code
    first = tuple(candidates[space.index_of(variants) >= 0][0].tolist())
    return first, _changed(space, first, **changes)


def _assert_same_network(space: MobileOneSpace, first: tuple[int, ...], second: tuple[int, ...]) -> None:
    """The networks of two encodings compute the same function once they share weights."""
    torch.manual_seed(0)
    a, b = space.to_module(first).eval(), space.to_module(second).eval()
    b.load_state_dict(a.state_dict())  # strict: same parameter names and shapes
    x = space.sample_input(2)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_twins_build_the_same_network_and_other_members_do_not_share_keys(space: MobileOneSpace) -> None:
    keys = space.function_keys(space.all_codes)
    assert torch.unique(keys).numel() == 44_642  # of 55,846 members
    # A depth-0 stage 4 is one SE unit, as a depth-1 one with se=yes is; with depth_3 in {0, 1}
    # and depth_4 = 0 no unit is gated by se, so se=no is a third twin.
    base, depth_1 = _pair(space, {"depth_3": DEPTHS.index(1), "depth_4": 0, "se": 0}, depth_4=DEPTHS.index(1), se=1)
    se_yes = _changed(space, base, se=1)
    twins = torch.tensor([base, se_yes, depth_1])
    assert space.function_keys(twins).unique().numel() == 1
    _assert_same_network(space, base, se_yes)
    _assert_same_network(space, base, depth_1)
    # Not twins: the branch count (same fused network, other training parameters), a plain
    # depth-1 stage 4 against the SE unit of depth 0, se once stage 4 has units to gate.
    pairs = [
        (base, _changed(space, base, branches=1 - base[9])),
        _pair(space, {"depth_4": DEPTHS.index(1), "se": 0}, depth_4=0),
        _pair(space, {"depth_4": DEPTHS.index(2), "se": 0}, se=1),
    ]
    for first, second in pairs:
        assert space.function_keys(torch.tensor([first, second])).unique().numel() == 2


def test_skipped_stages_make_twins_of_the_same_built_stages() -> None:
    space = MobileOneSpace(zero_depth="skip", resolution=32)
    # 8 units of 256 channels as stage 2 (128 x 2) or as stage 3 (256 x 1); the skipped stage's
    # width is irrelevant. Without SE both are plain; with it only stage 3 would gate units.
    codes = space.all_codes
    as_stage_2 = codes[(codes[:, 2] == DEPTHS.index(8)) & (codes[:, 4] == 0) & (codes[:, 3] == 7) & (codes[:, 8] == 0)]
    as_stage_3 = codes[(codes[:, 2] == 0) & (codes[:, 4] == DEPTHS.index(8)) & (codes[:, 5] == 3) & (codes[:, 8] == 0)]
    shared = [0, 1, 6, 7, 9]  # depth_1, width_1, depth_4, width_4, branches
    partners = {tuple(row[shared].tolist()): tuple(row.tolist()) for row in as_stage_3}
    first = next(tuple(row.tolist()) for row in as_stage_2 if tuple(row[shared].tolist()) in partners)
    second = partners[tuple(torch.tensor(first)[shared].tolist())]
    assert space.function_keys(torch.tensor([first, second])).unique().numel() == 1
    _assert_same_network(space, first, second)
    gated = torch.tensor([_changed(space, first, se=1), _changed(space, second, se=1)])
    assert space.function_keys(gated).unique().numel() == 2
    assert torch.unique(space.function_keys(codes)).numel() == 34_540  # of 74,894 members


def test_the_stem_stride_is_part_of_the_signature_only_when_set() -> None:
    from nas.spaces import build_space

    published, small = build_space("mobileone"), build_space("mobileone", stem_stride=1)
    assert "stem_stride" not in published.signature() and small.signature()["stem_stride"] == 1
