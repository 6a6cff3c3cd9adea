"""SnapFormer (thesis §8.3) and SwiftFormer with a searched attention."""
from __future__ import annotations

from typing import Callable

import pytest
import timm
import torch
from torch import nn

import models
from models.attention_cell import SNAPFORMER_ATTENTION, SWIFTFORMER_ATTENTION, AttentionCell
from models.blocks.swiftformer import SwiftFormerBlock
from models.profiling import count_parameters
from models.snapformer import (
    SNAPFORMER_VARIANTS,
    scale_widths,
    snapformer_xxs,
    swiftformer_with_attention,
)


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("snapformer_xxs", 2.84e6),  # Table 8.3
        ("snapformer_xs", 4.48e6),  # Tables 8.2, 8.3
        ("snapformer_s", 7.86e6),
        ("swiftformer_xs_snapattn", 3.41e6),  # Table 8.2, "+ low-latency attention mechanism"
        ("swiftformer_s_snapattn", 6.01e6),
    ],
)
def test_parameter_counts_match_the_thesis(name: str, published: float) -> None:
    params = count_parameters(models.create_model(name, num_classes=1000))
    assert abs(params - published) <= 0.02 * published, f"{name}: {params:,} vs {published:,.0f}"


@pytest.mark.parametrize("variant", sorted(SNAPFORMER_VARIANTS))
def test_stages_follow_table_8_1(variant: str) -> None:
    model = models.create_model(f"snapformer_{variant}")
    config = SNAPFORMER_VARIANTS[variant]
    for stage, depth, attention, width in zip(model.stages, config["depths"], config["attention_blocks"], config["widths"]):
        kinds = [isinstance(block, SwiftFormerBlock) for block in stage.blocks]
        assert kinds == [False] * (depth - attention) + [True] * attention
        for block in stage.blocks[depth - attention :]:
            assert isinstance(block.token_mixer, AttentionCell)
            assert block.token_mixer.encoding == SNAPFORMER_ATTENTION and block.token_mixer.dim == width


def test_timm_creates_snapformer() -> None:
    torch.set_num_threads(1)
    assert {"snapformer_xxs", "snapformer_xs", "snapformer_s"} <= set(timm.list_models("snapformer_*"))
    model = timm.create_model("snapformer_xs", num_classes=10).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert "snapformer_xs" in models.list_models()


def test_fusion_keeps_snapformer_outputs(
    randomize: Callable[..., nn.Module], check_fusion: Callable[[nn.Module, torch.Tensor], nn.Module]
) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = snapformer_xxs(num_classes=10)
    fused = check_fusion(model, torch.randn(2, 3, 64, 64))
    assert count_parameters(fused, trainable_only=False) < count_parameters(model)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in fused.stages.modules())


def test_swiftformer_encoding_rebuilds_swiftformer_xs() -> None:
    # Same parameter count as timm's SwiftFormer-XS (which always has the distillation head).
    model = swiftformer_with_attention(SWIFTFORMER_ATTENTION, "xs")
    assert count_parameters(model) == count_parameters(timm.create_model("swiftformer_xs")) == 3_475_360


def test_width_coefficient_scales_every_stage() -> None:
    assert scale_widths((48, 56, 112, 220), 1.1) == (53, 62, 123, 242)
    model = swiftformer_with_attention(SNAPFORMER_ATTENTION, "xs", width_coefficient=1.1, num_classes=10)
    assert [stage.blocks[0].pwconv2.out_channels for stage in model.stages] == [53, 62, 123, 242]
    assert count_parameters(model) > count_parameters(swiftformer_with_attention(SNAPFORMER_ATTENTION, num_classes=10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width_coefficient": 0.0}, "width_coefficient must be a positive number, got 0.0"),
        ({"width_coefficient": True}, "width_coefficient must be a positive number"),
        ({"variant": "l1"}, "Unknown SwiftFormer variant 'l1'; valid variants are 'xs', 's'"),
    ],
)
def test_bad_swiftformer_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        swiftformer_with_attention(SNAPFORMER_ATTENTION, **kwargs)  # type: ignore[arg-type]
