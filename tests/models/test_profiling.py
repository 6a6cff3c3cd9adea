"""Zero-cost profiling: parameters, FLOPs, latency protocol, peak memory."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.blocks.mobileone import MobileOneBlock
from models.profiling import (
    LatencyStats,
    ModelProfile,
    count_flops,
    count_parameters,
    flush_denormals,
    measure_latency,
    peak_memory_bytes,
    profile_model,
)


def _conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))


def test_count_parameters_trainable_and_all():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[1].requires_grad_(False)
    assert count_parameters(model) == 3 * 4 + 4
    assert count_parameters(model, trainable_only=False) == 3 * 4 + 4 + 4 * 2 + 2


def test_count_flops_counts_multiply_adds_twice_and_restores_mode():
    linear = nn.Linear(3, 4)
    assert count_flops(linear, torch.randn(2, 3)) == 2 * 2 * 3 * 4
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False).train()
    assert count_flops(conv, torch.randn(1, 3, 8, 8)) == 2 * (8 * 8) * 8 * 3 * 9
    assert conv.training


def test_fusion_reduces_flops():
    block = MobileOneBlock(8, 8, 3, groups=8, num_conv_branches=4)
    x = torch.randn(1, 8, 16, 16)
    profile = profile_model(block, x, warmup=0, repetitions=1)
    assert count_flops(block, x) > profile.flops > 0
    assert profile.params > profile.fused_params == 8 * 9 + 8


def test_measure_latency_protocol():
    model = _conv_net().train()
    stats = measure_latency(model, torch.randn(2, 3, 16, 16), warmup=1, repetitions=7, fuse=False)
    assert isinstance(stats, LatencyStats)
    assert stats.repetitions == 7 and stats.batch_size == 2
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.std_ms >= 0
    assert model.training  # measuring leaves the caller's train/eval state alone


def test_measure_latency_fuses_a_copy():
    block = MobileOneBlock(4, 4, 3, groups=4, num_conv_branches=2)
    measure_latency(block, torch.randn(1, 4, 8, 8), warmup=0, repetitions=1)
    assert block.reparam_conv is None and hasattr(block, "conv_kxk")


def test_measure_latency_rejects_no_repetitions():
    with pytest.raises(ValueError, match="repetitions must be at least 1, got 0"):
        measure_latency(_conv_net(), torch.randn(1, 3, 8, 8), repetitions=0)


def test_peak_memory_counts_weights_and_live_activations():
    model = _conv_net()
    static = sum(p.numel() * p.element_size() for p in model.parameters())
    small = peak_memory_bytes(model, torch.randn(1, 3, 16, 16))
    large = peak_memory_bytes(model, torch.randn(1, 3, 32, 32))
    # At least one 16-channel activation map is alive at the peak; 4x the pixels, 4x the activations.
    assert small - static >= 16 * 16 * 16 * 4
    assert large - static == 4 * (small - static)


def test_flush_denormals_is_scoped():
    tiny = torch.tensor([1e-39])  # a float32 denormal
    with flush_denormals():
        flushed = (tiny * 1.0).item()
    kept = (tiny * 1.0).item()
    if torch.set_flush_denormal(False):  # only meaningful where the CPU supports flushing
        assert flushed == 0.0
    assert kept > 0.0


def test_profile_model_as_dict():
    profile = profile_model(_conv_net(), torch.randn(1, 3, 8, 8), warmup=0, repetitions=2)
    assert isinstance(profile, ModelProfile)
    values = profile.as_dict()
    assert set(values) == {"params", "fused_params", "flops", "latency_ms", "peak_memory_bytes"}
    assert values["params"] == values["fused_params"] == float(count_parameters(_conv_net()))
