"""MobileOne blocks and MobileOne-S0: exact fusion and parity with timm."""
from __future__ import annotations

import re

import pytest
import timm
import torch
from timm.utils.model import reparameterize_model as timm_reparameterize_model
from torch import nn

from models import create_model
from models.blocks.mobileone import MobileOneBlock, MobileOneUnit
from models.profiling import count_parameters
from models.reparam import reparameterize_model

BRANCH_NAMES = ("conv_kxk", "conv_scale", "identity")


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel_size", "stride", "groups", "branches", "use_se"),
    [
        (8, 8, 3, 1, 8, 4, False),  # depthwise with identity branch
        (8, 8, 3, 2, 8, 1, False),  # strided: no identity branch
        (8, 16, 1, 1, 1, 4, False),  # pointwise: no scale branch
        (16, 16, 1, 1, 1, 2, True),  # pointwise with identity and SE
        (8, 16, 3, 1, 4, 3, False),  # grouped, width change
        (16, 16, 5, 1, 2, 2, True),  # grouped with identity, larger kernel
    ],
)
def test_mobileone_block_fuses_exactly(check_fusion, in_channels, out_channels, kernel_size, stride, groups, branches, use_se):
    block = MobileOneBlock(
        in_channels, out_channels, kernel_size, stride=stride, groups=groups, num_conv_branches=branches, use_se=use_se
    )
    has_identity = in_channels == out_channels and stride == 1
    assert (block.identity is not None) == has_identity
    assert (block.conv_scale is not None) == (kernel_size > 1)
    fused = check_fusion(block, torch.randn(2, in_channels, 9, 9))
    assert isinstance(fused.reparam_conv, nn.Conv2d)
    assert not any(hasattr(fused, name) for name in BRANCH_NAMES)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())


def test_reparameterize_is_in_place_and_idempotent():
    block = MobileOneBlock(4, 4, 3, groups=4, num_conv_branches=2).eval()
    x = torch.randn(1, 4, 6, 6)
    block.reparameterize()
    once = block(x)
    conv = block.reparam_conv
    block.reparameterize()
    assert block.reparam_conv is conv
    assert torch.equal(block(x), once)


def test_reparameterize_model_leaves_original_untouched():
    unit = MobileOneUnit(8, 16, stride=2, num_conv_branches=2)
    fused = reparameterize_model(unit)
    assert unit.depthwise.reparam_conv is None and hasattr(unit.depthwise, "conv_kxk")
    assert fused.depthwise.reparam_conv is not None


def _timm_to_ours(key: str) -> str:
    """timm's MobileOne names each depthwise/pointwise block as a stage entry; ours groups them in units."""
    match = re.match(r"stages\.(\d+)\.(\d+)\.(.*)", key)
    if match:
        stage, index, rest = int(match[1]), int(match[2]), match[3]
        part = "depthwise" if index % 2 == 0 else "pointwise"
        return f"stages.{stage}.blocks.{index // 2}.{part}.{rest}"
    return key.replace("head.fc.", "head.")


@pytest.mark.parametrize(("num_classes", "train_params", "fused_params"), [(1000, 5_293_272, 2_078_504), (10, 4_278_522, 1_063_754)])
def test_mobileone_s0_parameter_counts_match_timm(num_classes, train_params, fused_params):
    ours = create_model("mobileone_s0", num_classes=num_classes)
    reference = timm.create_model("mobileone_s0", pretrained=False, num_classes=num_classes)
    assert count_parameters(ours) == count_parameters(reference) == train_params
    fused_ours = count_parameters(reparameterize_model(ours), trainable_only=False)
    fused_reference = count_parameters(timm_reparameterize_model(reference), trainable_only=False)
    assert fused_ours == fused_reference == fused_params


@torch.no_grad()
def test_mobileone_s0_computes_the_same_function_as_timm(randomize):
    reference = randomize(timm.create_model("mobileone_s0", pretrained=False, num_classes=10), seed=1)
    ours = create_model("mobileone_s0", num_classes=10).eval()
    ours.load_state_dict({_timm_to_ours(k): v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 64, 64)
    expected = reference(x)
    assert torch.allclose(ours(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_mobileone_s0_fuses_exactly(check_fusion):
    model = create_model("mobileone_s0", num_classes=10)
    fused = check_fusion(model, torch.randn(2, 3, 64, 64))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    blocks = [m for m in fused.modules() if isinstance(m, MobileOneBlock)]
    assert len(blocks) == 1 + 2 * (2 + 8 + 10 + 1)
    assert all(b.reparam_conv is not None and not hasattr(b, "conv_kxk") for b in blocks)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(in_channels=8, out_channels=8, kernel_size=4), "kernel_size must be odd"),
        (dict(in_channels=8, out_channels=12, kernel_size=3, groups=8), "groups=8 must divide"),
        (dict(in_channels=8, out_channels=24, kernel_size=1, use_se=True), "SE reduction 16 does not divide the channel count 24"),
        (dict(in_channels=8, out_channels=8, num_conv_branches=0), "num_conv_branches must be a positive integer, got 0"),
    ],
)
def test_mobileone_block_rejects_bad_configurations(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MobileOneBlock(**kwargs)


def test_zero_initialised_branches_start_a_block_as_its_identity_branch_and_still_learn():
    torch.manual_seed(0)
    with_identity, strided = MobileOneBlock(8, 8, 3, groups=8, num_conv_branches=2), MobileOneBlock(8, 8, 3, stride=2, groups=8)
    assert with_identity.zero_init_branches() and not strided.zero_init_branches()
    x = torch.randn(4, 8, 6, 6)
    # In training mode the block is now ReLU(BN(x)): only its identity branch speaks.
    assert torch.allclose(with_identity(x), torch.relu(nn.functional.batch_norm(x, None, None, training=True)), atol=1e-5)
    assert all(torch.equal(branch.bn.weight, torch.ones(8)) for branch in [*strided.conv_kxk, strided.conv_scale])  # no identity: unchanged
    # The branches are not dead: their BatchNorm scales receive gradients from the first step.
    with_identity(x).square().mean().backward()
    assert float(with_identity.conv_kxk[0].bn.weight.grad.abs().sum()) > 0
    assert float(with_identity.conv_scale.bn.weight.grad.abs().sum()) > 0


def test_zero_init_branches_reaches_every_block_of_a_network_and_fusion_stays_exact(check_fusion):
    from models.reparam import zero_init_branches

    unit = nn.Sequential(*(MobileOneUnit(8, 8, num_conv_branches=2) for _ in range(3)), MobileOneUnit(8, 16, stride=2))
    # Three units of two blocks with identity branches; the strided unit has one (its pointwise block changes the width).
    assert zero_init_branches(unit) == 6
    check_fusion(unit, torch.randn(2, 8, 8, 8))
