"""The MOAT / MobileNetV2 / ViT cell space of §7.2: 9 cell types, the reference network
styles inside it, and the sequential and parallel cell semantics."""
from __future__ import annotations

import pytest
import torch

from models.blocks.attention import SelfAttentionBlock
from models.blocks.mbconv import MBConv
from models.blocks.mlp import MlpBlock
from models.blocks.se import SqueezeExcite
from models.profiling import count_parameters
from nas.errors import NASError
from nas.spaces.moat_hybrid import (
    CELL_LABELS,
    MOAT_STYLE,
    MOBILENETV2_STYLE,
    VIT_STYLE,
    CellType,
    MiniblockCell,
    MoatHybridSpace,
)


@pytest.fixture(scope="module")
def space() -> MoatHybridSpace:
    return MoatHybridSpace(resolution=32)


def _count(model: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_seven_feasible_cells_and_two_parallel_ones_give_9_to_the_4(space: MoatHybridSpace) -> None:
    assert CELL_LABELS == (
        "mbconv+zero",
        "mbconv_se+zero",
        "mbconv+attention",
        "mbconv_se+attention",
        "mbconv+mlp",
        "mbconv_se+mlp",
        "attention+mlp",
        "mbconv|attention",
        "mbconv_se|attention",
    )
    assert space.size == 9**4 == 6_561


@pytest.mark.parametrize(
    ("text", "params", "mbconv", "attention", "mlp"),
    [
        (MOAT_STYLE, 3_558_794, 14, 9, 0),  # tiny-MOAT-0 layout: MBConv stages, then MOAT blocks
        (MOBILENETV2_STYLE, 2_567_306, 14, 0, 0),
        (VIT_STYLE, 3_541_130, 0, 14, 14),
    ],
)
def test_reference_styles_are_members(space: MoatHybridSpace, text: str, params: int, mbconv: int, attention: int, mlp: int) -> None:
    model = space.to_module(space.parse(text), num_classes=10)
    assert count_parameters(model) == params
    assert (_count(model, MBConv), _count(model, SelfAttentionBlock), _count(model, MlpBlock)) == (mbconv, attention, mlp)
    assert _count(model, SqueezeExcite) == 0


def test_moat_cells_run_mbconv_then_attention(space: MoatHybridSpace) -> None:
    model = space.to_module(space.parse(MOAT_STYLE.replace("cell_4=mbconv+attention", "cell_4=mbconv_se+attention")))
    cell = model.stages[3].blocks[0]
    assert [type(m) for m in cell.miniblocks] == [MBConv, SelfAttentionBlock]
    assert _count(cell, SqueezeExcite) == 1
    assert cell.miniblocks[1].attention[1].num_heads == 256 // 32


def test_cells_compose_their_residual_miniblocks_in_sequence_or_in_parallel() -> None:
    torch.manual_seed(0)
    options = {"self_attention": {"num_heads": 2}}
    x = torch.randn(2, 16, 5, 5)
    sequential = MiniblockCell(16, CellType("mbconv", "attention"), options).eval()
    parallel = MiniblockCell(16, CellType("mbconv", "attention", parallel=True), options).eval()
    parallel.load_state_dict(sequential.state_dict())
    mbconv, attention = sequential.miniblocks
    with torch.no_grad():
        torch.testing.assert_close(sequential(x), attention(mbconv(x)))
        residual_a, residual_b = mbconv.body(x), attention(x) - x
        torch.testing.assert_close(parallel(x), x + residual_a + residual_b)
    alone = MiniblockCell(16, CellType("mbconv_se", "zero"), options)
    assert [type(m) for m in alone.miniblocks] == [MBConv]


def test_widths_must_suit_the_attention_heads_and_se() -> None:
    with pytest.raises(NASError, match="divisible by head_dim=32 and se_reduction=4, got width 48"):
        MoatHybridSpace(widths=(32, 48, 128, 256))
    with pytest.raises(NASError, match="4 stages"):
        MoatHybridSpace(depths=(2, 3, 7))
    # The widths every space checks: four positive whole numbers (config typos included).
    for widths in ((32, 64, 128), "32,64,128,256", (32, 64, True, 256), (32, 64, 128.0, 256), 64):
        with pytest.raises(NASError, match=r"Search space 'moat_hybrid' needs 4 positive integer stage widths, got"):
            MoatHybridSpace(widths=widths)  # type: ignore[arg-type]


def _shapes(module: torch.nn.Module) -> str:
    """The multiset of parameter and buffer shapes: what any weight sharing must match."""
    return repr(sorted(tuple(value.shape) for value in module.state_dict().values()))


def test_the_space_has_no_twins() -> None:
    space = MoatHybridSpace(widths=(32, 32, 32, 32), depths=(1, 1, 1, 1), resolution=16)
    assert torch.unique(space.function_keys(space.all_codes)).numel() == space.size == 6_561
    # A stage is built from its own cell type only: one network per type gives every layout.
    networks = [space.to_module((code,) * 4).eval() for code in range(len(CELL_LABELS))]
    layouts: dict[str, list[str]] = {}
    for code, network in enumerate(networks):
        layouts.setdefault(_shapes(network.stages[1]), []).append(CELL_LABELS[code])
    # Only the sequential and parallel MOAT cells can share weights ...
    assert sorted(group for group in layouts.values() if len(group) > 1) == [
        ["mbconv+attention", "mbconv|attention"],
        ["mbconv_se+attention", "mbconv_se|attention"],
    ]
    # ... and they compute different functions with the same weights, under different keys.
    x = space.sample_input(2)
    for sequential, parallel in ((2, 7), (3, 8)):
        networks[parallel].load_state_dict(networks[sequential].state_dict())
        with torch.no_grad():
            assert not torch.allclose(networks[sequential](x), networks[parallel](x))
        codes = torch.tensor([(sequential,) * 4, (parallel,) * 4])
        assert space.function_keys(codes).unique().numel() == 2
