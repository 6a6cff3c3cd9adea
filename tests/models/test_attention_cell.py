"""The efficient-attention meta-cell (thesis §8.2): the space, its validation, codec and modules."""
from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
import torch
from timm.models.swiftformer import EfficientAdditiveAttention as TimmEfficientAdditiveAttention

from models.attention_cell import (
    CELL_OPS,
    CODE_RANGES,
    FUNCTIONALLY_DISTINCT_DESIGNS,
    NUM_SEARCH_DESIGNS,
    SNAPFORMER_ATTENTION,
    SWIFTFORMER_ATTENTION,
    SWIFTFORMER_SOFTMAX_ATTENTION,
    VARIABLES,
    AttentionCell,
    AttentionEncoding,
    attention_mixer,
    decode,
    encode,
    enumerate_attention_designs,
)
from models.profiling import count_parameters

DIM, TOKENS, BATCH = 32, 16, 2


@pytest.fixture(scope="module")
def designs() -> list[AttentionEncoding]:
    return enumerate_attention_designs()


def test_space_has_10560_distinct_valid_designs(designs: list[AttentionEncoding]) -> None:
    assert len(designs) == NUM_SEARCH_DESIGNS == 10_560
    assert len(set(designs)) == len(designs)
    assert len({encode(design) for design in designs}) == len(designs)
    # Rebuilding each design from its fields re-runs the validation.
    assert all(AttentionEncoding(**dataclasses.asdict(design)) == design for design in designs)
    assert {op for design in designs for op in design.ops} == {"softmax", "gelu", "silu"}


def test_space_breakdown_by_branch_kinds(designs: list[AttentionEncoding]) -> None:
    per_kind = Counter((design.b1_dim, design.b2_dim) for design in designs)
    # 48 = b1_op x b1_mat2 x comb_type (x 1 for each b1_dim); nd: 2 x 2, 1-D: 3 x 3 x 3 x 4.
    assert per_kind == {(b1, b2): 24 * (4 if b2 == "nd" else 108) for b1 in "nd" for b2 in ("nd", "n", "d")}


def test_functionally_distinct_designs(designs: list[AttentionEncoding]) -> None:
    assert len({design.structure() for design in designs}) == FUNCTIONALLY_DISTINCT_DESIGNS


def test_four_operation_space() -> None:
    extended = enumerate_attention_designs(CELL_OPS)
    assert len(extended) == len(set(extended)) == 18_688
    assert SWIFTFORMER_ATTENTION in extended


def test_named_designs_in_the_space(designs: list[AttentionEncoding]) -> None:
    assert SNAPFORMER_ATTENTION in designs
    assert SWIFTFORMER_SOFTMAX_ATTENTION in designs
    assert SWIFTFORMER_ATTENTION not in designs  # its L2 token normalisation is not a thesis operation
    # §8.3.1: three input projections, no output projections, a d- and an n-dimensional branch.
    assert SNAPFORMER_ATTENTION.num_projections == 3
    assert (SNAPFORMER_ATTENTION.b1_dim, SNAPFORMER_ATTENTION.b2_dim, SNAPFORMER_ATTENTION.comb_type) == ("d", "n", "id-id")
    assert SWIFTFORMER_ATTENTION.num_projections == 2


def _expected_parameters(design: AttentionEncoding, dim: int) -> int:
    linear = dim * dim + dim
    score_vectors = sum(1 for kind in (design.b1_dim, design.b2_dim) if kind == "d")
    output_projections = design.comb_type.count("linear")
    return design.num_projections * linear + score_vectors * dim + output_projections * linear


def _check_forward_backward(design: AttentionEncoding, seed: int) -> None:
    torch.manual_seed(seed)
    cell = AttentionCell(DIM, design)
    x = torch.randn(BATCH, TOKENS, DIM, requires_grad=True)
    out = cell(x)
    assert out.shape == (BATCH, TOKENS, DIM), design
    assert torch.isfinite(out).all(), design
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), design
    for name, parameter in cell.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), (design, name)
    assert count_parameters(cell) == _expected_parameters(design, DIM), design


def test_random_designs_build_and_train(designs: list[AttentionEncoding]) -> None:
    torch.set_num_threads(1)
    sample = random.Random(0).sample(designs, 300)
    for index, design in enumerate(sample):
        _check_forward_backward(design, seed=index)


@pytest.mark.slow
def test_every_design_builds_and_trains(designs: list[AttentionEncoding]) -> None:
    torch.set_num_threads(1)
    for index, design in enumerate(designs):
        _check_forward_backward(design, seed=index)


def test_cell_is_resolution_independent() -> None:
    cell = AttentionCell(DIM, SNAPFORMER_ATTENTION).eval()
    for tokens in (1, 7, 49):
        assert cell(torch.randn(BATCH, tokens, DIM)).shape == (BATCH, tokens, DIM)


@pytest.mark.parametrize("dim", [16, 48, 220])
def test_swiftformer_encoding_has_timm_parameter_count(dim: int) -> None:
    reference = TimmEfficientAdditiveAttention(in_dims=dim, token_dim=dim)
    assert count_parameters(AttentionCell(dim, SWIFTFORMER_ATTENTION)) == count_parameters(reference)


@torch.no_grad()
def test_swiftformer_encoding_reproduces_timm_outputs() -> None:
    torch.manual_seed(0)
    reference = TimmEfficientAdditiveAttention(in_dims=DIM, token_dim=DIM).eval()
    cell = AttentionCell(DIM, SWIFTFORMER_ATTENTION).eval()
    query, key = cell.projections
    query.load_state_dict(reference.to_query.state_dict())
    key.load_state_dict(reference.to_key.state_dict())
    cell.branch1.w.copy_(reference.w_g)
    cell.proj1.load_state_dict(reference.proj.state_dict())
    cell.proj2.load_state_dict(reference.final.state_dict())
    image = torch.randn(BATCH, DIM, 5, 7)
    expected = reference(image)  # timm's module works on B x C x H x W
    tokens = cell(image.flatten(2).transpose(1, 2))
    actual = tokens.transpose(1, 2).reshape_as(image)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    # The softmax variant of the thesis' space is a different function on the same weights.
    softmax_cell = AttentionCell(DIM, SWIFTFORMER_SOFTMAX_ATTENTION).eval()
    softmax_cell.load_state_dict(cell.state_dict())
    assert not torch.allclose(softmax_cell(image.flatten(2).transpose(1, 2)), tokens)


def test_attention_mixer_is_a_token_mixer_factory() -> None:
    cell = attention_mixer(SNAPFORMER_ATTENTION)(24)
    assert isinstance(cell, AttentionCell) and cell.dim == 24
    with pytest.raises(ValueError, match="AttentionEncoding"):
        attention_mixer(encode(SNAPFORMER_ATTENTION))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"b1_dim": "nd"}, r"b1_dim='nd' is invalid; valid values are 'n', 'd'"),
        ({"b1_op": "relu"}, r"b1_op='relu' is invalid; valid values are 'softmax', 'gelu', 'silu', 'l2norm'"),
        ({"comb_type": "linear"}, r"comb_type='linear' is invalid"),
        ({"b1_mat2": "M2"}, r"b1_mat2='M2' is invalid; valid values are 'M1', 'new'"),
        ({"b2_op": "gelu"}, r"b2_op='gelu' is invalid: b2_op is inactive when b2_dim='nd'"),
        ({"b2_mat3": "M1"}, r"b2_mat3='M1' is invalid: b2_mat3 is inactive when b2_dim='nd'"),
        ({"b2_mat12": None}, r"b2_mat12=None is invalid \(active because b2_dim='nd'\)"),
        ({"b2_mat12": "M1"}, r"b2_mat12='M1' is invalid \(active because b2_dim='nd'\); valid values are 'M2', 'new'"),
        ({"comb_mat": "M3"}, r"comb_mat='M3' is invalid \(with b2_dim='nd'\); valid values are 'M1', 'M2'"),
    ],
)
def test_invalid_2d_branch_designs_raise(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SWIFTFORMER_ATTENTION, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"b2_mat12": "new"}, r"b2_mat12='new' is invalid: b2_mat12 is inactive when b2_dim='n'"),
        ({"b2_op": None}, r"b2_op=None is invalid \(active because b2_dim='n'\)"),
        ({"b2_mat4": "M4"}, r"b2_mat4='M4' is invalid \(active because b2_dim='n'\); valid values are 'M1', 'M2', 'new'"),
        ({"b2_dim": "nd"}, r"b2_mat12=None is invalid \(active because b2_dim='nd'\)"),
        ({"comb_mat": "M5"}, r"comb_mat='M5' is invalid \(with b2_dim='n'\); valid values are 'M1', 'M2', 'M3', 'M4'"),
    ],
)
def test_invalid_1d_branch_designs_raise(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SNAPFORMER_ATTENTION, **changes)


def test_cell_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        AttentionCell(0, SNAPFORMER_ATTENTION)
    with pytest.raises(ValueError, match="encoding must be an AttentionEncoding"):
        AttentionCell(DIM, dataclasses.asdict(SNAPFORMER_ATTENTION))  # type: ignore[arg-type]


def test_codec_round_trips_every_design(designs: list[AttentionEncoding]) -> None:
    for design in designs + [SWIFTFORMER_ATTENTION]:
        codes = encode(design)
        assert len(codes) == len(VARIABLES)
        assert all(low <= code <= high for code, (low, high) in zip(codes, CODE_RANGES))
        assert decode(codes) == design
    inactive = {name for name, code in zip(VARIABLES, encode(SWIFTFORMER_ATTENTION)) if code == 0}
    assert inactive == {"b2_op", "b2_mat3", "b2_mat4"}


def test_codes_are_stable() -> None:
    # Saved searches store these vectors: changing a domain's order must show here.
    assert encode(SWIFTFORMER_ATTENTION) == (2, 1, 4, 1, 2, 0, 0, 0, 4, 1)
    assert encode(SNAPFORMER_ATTENTION) == (2, 2, 1, 2, 0, 1, 3, 2, 1, 1)
    assert CODE_RANGES == ((1, 2), (1, 3), (1, 4), (1, 2), (0, 2), (0, 4), (0, 3), (0, 3), (1, 4), (1, 4))


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ((2, 1, 4), r"has 10 entries"),
        ((0, 1, 4, 1, 2, 0, 0, 0, 4, 1), r"Code 0 of b1_dim is out of range; valid codes are 1..2"),
        ((2, 1, 4, 1, 3, 0, 0, 0, 4, 1), r"Code 3 of b2_mat12 is out of range; valid codes are 0..2 \(0 = inactive"),
        ((2, 1, 4, 1, 2, 1, 0, 0, 4, 1), r"b2_op='softmax' is invalid: b2_op is inactive"),
        ((2, 1, 4, 1, 2, 0, 0, 0, 4, 1.5), r"Code of comb_mat must be an integer"),
    ],
)
def test_decode_rejects_bad_codes(codes: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(codes)  # type: ignore[arg-type]
