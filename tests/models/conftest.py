"""Fixtures for the model-zoo tests: non-trivial BatchNorm statistics and fusion checks."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from models.blocks.layers import LayerScale2d
from models.reparam import reparameterize_model


@torch.no_grad()
def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, and every layer
    scale a non-negligible value, so that a wrong fusion formula shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            uniform(module.running_mean, -0.5, 0.5)
            uniform(module.running_var, 0.5, 2.0)
            uniform(module.weight, 0.5, 1.0)
            uniform(module.bias, -0.5, 0.5)
        elif isinstance(module, LayerScale2d):
            uniform(module.gamma, 0.5, 1.0)
    return model.eval()


@pytest.fixture
def randomize() -> Callable[..., nn.Module]:
    return _randomize


@pytest.fixture
def check_fusion() -> Callable[[nn.Module, torch.Tensor], nn.Module]:
    """Fuse ``model`` and assert eval outputs agree to 1e-5 of the output scale; returns the fused copy."""

    @torch.no_grad()
    def check(model: nn.Module, x: torch.Tensor) -> nn.Module:
        _randomize(model)
        expected = model(x)
        fused = reparameterize_model(model)
        actual = fused(x)
        assert actual.shape == expected.shape
        scale = expected.abs().max().item()
        assert scale > 0
        error = (actual - expected).abs().max().item()
        assert error <= 1e-5 * scale, f"fused output differs by {error:.3g} at output scale {scale:.3g}"
        return fused

    return check
