"""The attention space of §8.2: its 10,560 designs and their conditional variables, and
the width coefficient found by bisection (deterministic costs, then measured latency)."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from models.attention_cell import (
    SNAPFORMER_ATTENTION,
    SWIFTFORMER_ATTENTION,
    SWIFTFORMER_SOFTMAX_ATTENTION,
    AttentionEncoding,
)
from models.profiling import count_flops
from models.reparam import reparameterize_model
from models.snapformer import SWIFTFORMER_VARIANTS, scale_widths
from nas.errors import NASError
from nas.spaces.attention import AttentionSpace, WidthSearch, bisect_width

# Four projections and two linear combination layers: costlier than SwiftFormer's attention.
HEAVY = "b1_dim=d b2_dim=nd b1_op=softmax b1_mat2=new b2_mat12=new b2_op=inactive b2_mat3=inactive b2_mat4=inactive comb_type=linear-linear comb_mat=M1"
# One projection, no linear layers: cheaper.
LIGHT = "b1_dim=n b2_dim=n b1_op=gelu b1_mat2=M1 b2_mat12=inactive b2_op=silu b2_mat3=M1 b2_mat4=M1 comb_type=id-id comb_mat=M1"


@pytest.fixture
def flops_space(tmp_path: Path) -> AttentionSpace:
    return AttentionSpace(match="flops", tolerance=0.01, resolution=32, cache_dir=tmp_path)


def _check_bracket(search: WidthSearch, tolerance: float) -> None:
    """The bisection's promise: within tolerance, or the best point of a bracket around the target."""
    if search.converged:
        assert abs(search.relative_error) <= tolerance
    lower_cost, upper_cost = search.lower[1], search.upper[1]
    assert lower_cost is None or lower_cost < search.target
    assert upper_cost is None or upper_cost > search.target
    assert search.lower[0] <= search.coefficient <= search.upper[0]


def test_conditional_encoding_holds_exactly_the_10560_designs(tmp_path: Path) -> None:
    space = AttentionSpace(cache_dir=tmp_path)
    assert space.size == 10_560
    grid = torch.cartesian_prod(*[torch.arange(len(c)) for c in space.choices])
    assert grid.shape[0] == 110_592
    mask = space.valid_mask(grid)
    assert torch.equal(grid[mask], space.all_codes)  # both in key order
    designs = [space.design(tuple(row)) for row in space.all_codes[::53].tolist()]
    assert all(isinstance(d, AttentionEncoding) for d in designs)


def test_features_flag_inactive_variables_and_count_projections(flops_space: AttentionSpace) -> None:
    codes = flops_space.all_codes
    features = flops_space.features(codes)
    offsets = torch.cumsum(flops_space.cardinalities, 0) - flops_space.cardinalities
    branch2_2d = codes[:, 1] == 0
    b2_op_inactive = features[:, offsets[5]]  # the "inactive" slot of b2_op
    b2_mat12_inactive = features[:, offsets[4]]
    assert torch.equal(b2_op_inactive.bool(), branch2_2d)
    assert torch.equal(b2_mat12_inactive.bool(), ~branch2_2d)
    projections = [flops_space.design(tuple(row)).num_projections for row in codes.tolist()]
    assert torch.equal(features[:, -2] * 4, torch.tensor(projections, dtype=torch.float32))


def test_searched_designs_are_members_and_swiftformers_l2_attention_is_not(flops_space: AttentionSpace) -> None:
    for design in (SNAPFORMER_ATTENTION, SWIFTFORMER_SOFTMAX_ATTENTION):
        code = flops_space.encoding_of(design)
        assert flops_space.index_of(torch.tensor([code]))[0] >= 0
        assert flops_space.design(code) == design
    with pytest.raises(NASError, match="Variable 'b1_op' of search space 'attention' takes codes 0..2"):
        flops_space.encoding_of(SWIFTFORMER_ATTENTION)


def test_inactive_variables_must_be_inactive(flops_space: AttentionSpace) -> None:
    text = HEAVY.replace("b2_op=inactive", "b2_op=gelu")
    with pytest.raises(NASError, match="outside search space 'attention': b2_op='gelu' is invalid: b2_op is inactive when b2_dim='nd'"):
        flops_space.parse(text)


def test_bisection_converges_on_a_deterministic_cost() -> None:
    calls: list[float] = []

    def cost(c: float) -> float:
        calls.append(c)
        return float(round(1000 * c) ** 2)  # widths are integers: the cost is a step function

    search = bisect_width(cost, target=1.5e6, tolerance=0.002, max_steps=20)
    assert search.converged and search.steps == len(calls) < 20
    assert calls[0] == 1.0
    assert math.isclose(search.coefficient, math.sqrt(1.5), rel_tol=0.002)
    _check_bracket(search, 0.002)


def test_bisection_reports_an_unreachable_target() -> None:
    search = bisect_width(lambda c: 10 * c, target=1000.0, bounds=(0.5, 2.0), tolerance=0.01, max_steps=6)
    assert not search.converged and search.steps == 6
    assert search.upper == (2.0, None) and search.coefficient == search.lower[0] > 1.9
    _check_bracket(search, 0.01)
    with pytest.raises(NASError, match="0 < lower <= upper"):
        bisect_width(lambda c: c, 1.0, bounds=(2.0, 1.0))


@pytest.mark.parametrize(("text", "direction"), [(HEAVY, -1), (LIGHT, 1)])
def test_flops_matched_width_is_what_the_network_is_built_with(flops_space: AttentionSpace, text: str, direction: int) -> None:
    encoding = flops_space.parse(text)
    search = flops_space.width_search(encoding)
    assert search.converged and search.steps > 1
    assert math.copysign(1, search.coefficient - 1) == direction  # heavier designs get narrower
    _check_bracket(search, flops_space.tolerance)
    model = flops_space.to_module(encoding, num_classes=10)
    assert model.num_features == scale_widths(SWIFTFORMER_VARIANTS["xs"]["widths"], search.coefficient)[-1]
    assert count_flops(reparameterize_model(model), torch.randn(1, 3, 32, 32)) == search.cost


def test_width_coefficients_are_cached_on_disk(flops_space: AttentionSpace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoding = flops_space.parse(LIGHT)
    search = flops_space.width_search(encoding)
    again = AttentionSpace(match="flops", tolerance=0.01, resolution=32, cache_dir=tmp_path)

    def no_measuring(model: torch.nn.Module) -> float:
        raise AssertionError("a cached coefficient was measured again")

    monkeypatch.setattr(again, "measure", no_measuring)
    assert again.width_search(encoding) == search
    other = AttentionSpace(match="flops", tolerance=0.02, resolution=32, cache_dir=tmp_path)
    assert other.cache_path != flops_space.cache_path  # another signature, another file
    flops_space.cache_path.write_text("{not json")
    fresh = AttentionSpace(match="flops", tolerance=0.01, resolution=32, cache_dir=tmp_path)
    with pytest.raises(NASError, match="Width-coefficient cache .* is corrupted; delete it"):
        fresh.width_coefficient(encoding)


def test_measured_latency_bisection_smoke(tmp_path: Path) -> None:
    space = AttentionSpace(match="latency", tolerance=0.1, max_steps=3, warmup=1, repetitions=3, resolution=32, cache_dir=tmp_path)
    encoding = space.parse(HEAVY)
    search = space.width_search(encoding)
    assert 1 <= search.steps <= 3 and search.target == space.target_cost() > 0
    _check_bracket(search, 0.1)
    stored = json.loads(space.cache_path.read_text())
    assert stored["signature"]["hardware"] and stored["target"] == search.target
    assert WidthSearch.from_json(stored["designs"][space.to_string(encoding)]) == search
    assert space.to_module(encoding).eval()(space.sample_input(1)).shape == (1, 10)


# Branch 1 scores d-wise from M1 and pools new values M2; branch 2 scores n-wise from M1 too
# and sums new values M4. The product commutes, so swapping the branches (and which new
# projection comes first) gives SWAPPED, the same cell; SWAPPED_OPS only exchanges the operations.
BRANCHES = "b1_dim=d b2_dim=n b1_op=softmax b1_mat2=new b2_mat12=inactive b2_op=gelu b2_mat3=M1 b2_mat4=new comb_type=linear-id comb_mat=M2"
SWAPPED = "b1_dim=n b2_dim=d b1_op=gelu b1_mat2=new b2_mat12=inactive b2_op=softmax b2_mat3=M1 b2_mat4=new comb_type=linear-id comb_mat=M4"
SWAPPED_OPS = BRANCHES.replace("b1_op=softmax", "b1_op=gelu").replace("b2_op=gelu", "b2_op=softmax")


def _renamed(state: dict[str, torch.Tensor], order: tuple[int, ...], swap: bool) -> dict[str, torch.Tensor]:
    """``state`` with every attention cell's projection ``i`` renamed ``order[i]`` and, with
    ``swap``, its two branches' names exchanged."""
    renamed = {}
    for name, value in state.items():
        parts = name.split(".")
        if "projections" in parts:
            at = parts.index("projections") + 1
            parts[at] = str(order[int(parts[at])])
        elif swap and ("branch1" in parts or "branch2" in parts):
            at = parts.index("branch1") if "branch1" in parts else parts.index("branch2")
            parts[at] = "branch2" if parts[at] == "branch1" else "branch1"
        renamed[".".join(parts)] = value
    return renamed


def _same_function(space: AttentionSpace, first: str, second: str) -> bool:
    """Whether some renaming of the first network's weights (projections renumbered, branches
    exchanged) makes the second network compute the same outputs."""
    torch.manual_seed(0)
    a = space.to_module(space.parse(first)).eval()
    b = space.to_module(space.parse(second)).eval()
    state = a.state_dict()
    projections = max(int(n.split(".")[n.split(".").index("projections") + 1]) for n in state if ".projections." in n) + 1
    x = space.sample_input(1)
    with torch.no_grad():
        expected = a(x)
        for order in itertools.permutations(range(projections)):
            for swap in (False, True):
                try:
                    b.load_state_dict(_renamed(state, order, swap))
                except RuntimeError:  # the names or shapes do not fit
                    continue
                if torch.equal(b(x), expected):
                    return True
    return False


def test_twins_compute_the_same_function_and_share_their_width(tmp_path: Path) -> None:
    space = AttentionSpace(match="params", tolerance=0.05, resolution=32, cache_dir=tmp_path)
    keys = space.function_keys(space.all_codes)
    assert torch.unique(keys).numel() == 2_724  # of 10,560 designs
    twins = [
        (LIGHT, LIGHT.replace("comb_mat=M1", "comb_mat=M3")),  # M3 reuses M1: an alias
        (BRANCHES, SWAPPED),
    ]
    for first, second in twins:
        codes = torch.tensor([space.parse(first), space.parse(second)])
        assert space.function_keys(codes).unique().numel() == 1
        assert space.width_search(codes[1].tolist()) == space.width_search(codes[0].tolist())
        assert _same_function(space, first, second)
    stored = json.loads(space.cache_path.read_text())["designs"]
    assert sorted(stored) == sorted([LIGHT, SWAPPED])  # measured once, for the first twin in code order (n < d)
    # Not twins: with b1_mat2=new, M2 is not M1; exchanging only the operations changes the cell.
    not_twins = [(HEAVY, HEAVY.replace("comb_mat=M1", "comb_mat=M2")), (BRANCHES, SWAPPED_OPS)]
    for first, second in not_twins:
        assert space.function_keys(torch.tensor([space.parse(first), space.parse(second)])).unique().numel() == 2
    assert not _same_function(space, BRANCHES, SWAPPED_OPS)  # same parameter shapes, another function
