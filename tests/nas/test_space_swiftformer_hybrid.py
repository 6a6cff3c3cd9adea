"""The SwiftFormer / MobileOne hybrid space of Table 7.4: SwiftFormer-XS and all-MobileOne
networks inside it, and what each variable builds."""
from __future__ import annotations

import pytest
import timm
import torch

from models import create_model
from models.blocks.mobileone import MobileOneUnit
from models.blocks.se import SqueezeExcite
from models.blocks.swiftformer import ConvEncoder, SwiftFormerBlock
from models.profiling import count_parameters
from models.reparam import reparameterize_model
from nas.errors import NASError
from nas.spaces.swiftformer_hybrid import (
    ALL_MOBILEONE,
    SWIFTFORMER_XS,
    SwiftFormerHybridSpace,
    se_reduction,
)


@pytest.fixture(scope="module")
def space() -> SwiftFormerHybridSpace:
    return SwiftFormerHybridSpace(resolution=32)


def _blocks(model: torch.nn.Module, stage: int) -> list[torch.nn.Module]:
    return list(model.stages[stage].blocks)


def test_twelve_choices_per_stage_give_20736_networks(space: SwiftFormerHybridSpace) -> None:
    assert space.size == 12**4 == 20_736


@pytest.mark.parametrize("num_classes", [1000, 10])
def test_swiftformer_xs_matches_timm_like_for_like(num_classes: int) -> None:
    # timm's swiftformer_xs always has its distillation head: compare with the space's head option on ...
    with_head = SwiftFormerHybridSpace(distillation_head=True)
    ours = with_head.to_module(with_head.parse(SWIFTFORMER_XS), num_classes=num_classes)
    reference = timm.create_model("swiftformer_xs", pretrained=False, num_classes=num_classes)
    assert count_parameters(ours) == count_parameters(reference)
    # ... and without it, timm's count less its distillation head (a 220 -> num_classes linear layer).
    plain = SwiftFormerHybridSpace()
    without = plain.to_module(plain.parse(SWIFTFORMER_XS), num_classes=num_classes)
    assert count_parameters(without) == count_parameters(reference) - (220 * num_classes + num_classes)
    expected = {1000: 3_475_360, 10: 3_037_780}[num_classes]
    assert count_parameters(ours) == expected


def test_swiftformer_xs_is_the_model_zoo_network_parameter_for_parameter(space: SwiftFormerHybridSpace) -> None:
    ours = space.to_module(space.parse(SWIFTFORMER_XS))
    zoo = create_model("swiftformer_xs", num_classes=10)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in zoo.state_dict().items()}


def test_all_mobileone_network_has_only_mobileone_blocks(space: SwiftFormerHybridSpace) -> None:
    model = space.to_module(space.parse(ALL_MOBILEONE))
    assert not any(isinstance(m, (SwiftFormerBlock, ConvEncoder)) for m in model.modules())
    assert sum(isinstance(m, MobileOneUnit) for m in model.modules()) == 3 + 3 + 6 + 4
    assert count_parameters(model) == 1_568_158
    assert count_parameters(reparameterize_model(model), trainable_only=False) == 622_214


def test_attention_blocks_open_with_a_mini_block_of_the_stage_type(space: SwiftFormerHybridSpace) -> None:
    text = "conv_1=conv-enc attention_1=none conv_2=mo attention_2=last-2 conv_3=mo-se attention_3=all conv_4=conv-enc attention_4=last-1"
    model = space.to_module(space.parse(text))
    stage_1, stage_2, stage_3, stage_4 = (_blocks(model, s) for s in range(4))
    assert all(isinstance(b, ConvEncoder) for b in stage_1)
    assert [type(b) for b in stage_2] == [MobileOneUnit, SwiftFormerBlock, SwiftFormerBlock]
    assert all(isinstance(b.local, MobileOneUnit) and isinstance(b.local.depthwise.se, torch.nn.Identity) for b in stage_2[1:])
    assert len(stage_3) == 6 and all(isinstance(b, SwiftFormerBlock) for b in stage_3)
    assert all(isinstance(b.local.pointwise.se, SqueezeExcite) for b in stage_3)
    assert [type(b) for b in stage_4] == [ConvEncoder] * 3 + [SwiftFormerBlock]
    # SwiftFormer's local representation: a conv encoder without expansion.
    assert stage_4[3].local.pwconv1.out_channels == 220


def test_se_reductions_divide_the_swiftformer_widths() -> None:
    assert [se_reduction(w) for w in (48, 56, 112, 220)] == [16, 14, 16, 11]


def test_bad_options_are_refused() -> None:
    with pytest.raises(NASError, match="no variant 'xl'; valid values are 'xs', 's'"):
        SwiftFormerHybridSpace(variant="xl")
    with pytest.raises(NASError, match="num_conv_branches >= 1, got 0"):
        SwiftFormerHybridSpace(num_conv_branches=0)
    with pytest.raises(NASError, match=r"4 positive integer stage widths, got \[24, 32, 56\]"):
        SwiftFormerHybridSpace(widths=[24, 32, 56])
    with pytest.raises(NASError, match="4 positive integer stage widths"):
        SwiftFormerHybridSpace(widths=[24, 32, 0, 112])


def test_narrower_widths_build_the_same_skeleton_with_fewer_channels(space: SwiftFormerHybridSpace) -> None:
    narrow = SwiftFormerHybridSpace(widths=[24, 32, 56, 112], resolution=32)
    encoding = narrow.parse(SWIFTFORMER_XS)
    network, reference = narrow.to_module(encoding), space.to_module(encoding)
    assert [type(m).__name__ for m in network.modules()] == [type(m).__name__ for m in reference.modules()]
    assert count_parameters(network) < count_parameters(reference) / 3
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert narrow.signature()["widths"] == [24, 32, 56, 112] and narrow.signature() != SwiftFormerHybridSpace(resolution=32).signature()



def _shapes(module: torch.nn.Module) -> list[tuple[int, ...]]:
    """The multiset of parameter and buffer shapes: what any weight sharing must match."""
    return sorted(tuple(value.shape) for value in module.state_dict().values())


@pytest.mark.parametrize("variant", ["xs", "s"])
def test_no_two_members_can_share_weights_so_the_space_has_no_twins(variant: str) -> None:
    space = SwiftFormerHybridSpace(variant=variant, widths=[16, 16, 32, 32], resolution=32)
    # A stage is built from its own two variables and the fixed widths only, so one network per
    # (conv, attention) choice, the same in every stage, gives every stage's 12 parameter layouts.
    layouts = [[_shapes(stage) for stage in space.to_module((conv, attention) * 4).stages] for conv in range(3) for attention in range(4)]
    for stage in range(4):
        assert len({repr(choice[stage]) for choice in layouts}) == 12
    assert torch.unique(space.function_keys(space.all_codes)).numel() == space.size == 20_736
    # The nearest pairs: MobileOne units with and without SE, two attention blocks or one.
    base = SWIFTFORMER_XS.replace("conv_2=conv-enc", "conv_2=mo")
    for other in (base.replace("conv_2=mo", "conv_2=mo-se"), base.replace("attention_3=last-1", "attention_3=last-2")):
        assert space.function_keys(torch.tensor([space.parse(base), space.parse(other)])).unique().numel() == 2
