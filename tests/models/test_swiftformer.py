"""SwiftFormer blocks and SwiftFormer-XS/S: exact fusion, token-mixer interface, parity with timm.

timm's SwiftFormer always carries a distillation head ``head_dist`` (a second linear
classifier averaged with ``head`` at inference). Ours has it only with
``distillation_head=True``; parity is checked both ways: with the head our counts equal
timm's, without it they equal timm's minus ``head_dist``.
"""
from __future__ import annotations

import functools
import re

import pytest
import timm
import torch
from torch import nn

from models import create_model
from models.blocks.attention import MultiHeadSelfAttention
from models.blocks.layers import LayerScale2d
from models.blocks.mobileone import MobileOneUnit
from models.blocks.swiftformer import ConvEncoder, EfficientAdditiveAttention, SwiftFormerBlock
from models.profiling import count_parameters

REFERENCE_PARAMS = {"swiftformer_xs": 3_475_360, "swiftformer_s": 6_092_128}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_parameter_counts_match_timm(name, num_classes):
    reference = timm.create_model(name, pretrained=False, num_classes=num_classes)
    head_dist = count_parameters(reference.head_dist)
    with_dist = create_model(name, num_classes=num_classes, distillation_head=True)
    without = create_model(name, num_classes=num_classes)
    assert count_parameters(with_dist) == count_parameters(reference)
    assert count_parameters(without) == count_parameters(reference) - head_dist
    if num_classes == 1000:
        assert count_parameters(reference) == REFERENCE_PARAMS[name]


def _timm_to_ours(key: str) -> str:
    """Translate a timm SwiftFormer state-dict key to ours (conv-BN pairs are ConvBN modules)."""
    stem = {"stem.0.": "stem.layers.0.conv.", "stem.1.": "stem.layers.0.bn.", "stem.3.": "stem.layers.2.conv.", "stem.4.": "stem.layers.2.bn."}
    for old, new in stem.items():
        if key.startswith(old):
            return new + key[len(old):]
    key = key.replace(".downsample.proj.", ".downsample.conv.").replace(".downsample.norm.", ".downsample.bn.")
    key = key.replace(".local_representation.", ".local.").replace(".attn.", ".token_mixer.")
    key = key.replace(".linear.norm1.", ".mlp.mlp.norm.").replace(".linear.fc", ".mlp.mlp.fc")
    key = key.replace(".layer_scale_1.", ".layer_scale.").replace(".layer_scale_2.", ".mlp.layer_scale.")
    key = key.replace(".dwconv.", ".dwconv.conv.")
    return re.sub(r"\.(blocks\.\d+|local)\.norm\.", r".\1.dwconv.bn.", key)


@torch.no_grad()
def test_swiftformer_xs_computes_the_same_function_as_timm(randomize):
    reference = randomize(timm.create_model("swiftformer_xs", pretrained=False, num_classes=10), seed=2)
    ours = create_model("swiftformer_xs", num_classes=10, distillation_head=True).eval()
    state = {_timm_to_ours(k): v.reshape(ours.state_dict()[_timm_to_ours(k)].shape) for k, v in reference.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    expected = reference(x)
    assert torch.allclose(ours(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


@torch.no_grad()
def test_efficient_additive_attention_matches_timm():
    from timm.models.swiftformer import EfficientAdditiveAttention as TimmAttention

    ours = EfficientAdditiveAttention(16)
    reference = TimmAttention(in_dims=16, token_dim=16)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 5, 7)
    tokens = x.flatten(2).transpose(1, 2)
    expected = reference(x).flatten(2).transpose(1, 2)
    assert torch.allclose(ours(tokens), expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_swiftformer_fuses_exactly(check_fusion, name):
    model = create_model(name, num_classes=10, distillation_head=True)
    fused = check_fusion(model, torch.randn(2, 3, 64, 64))
    # Only the final norm (before pooling) and the layer scale after each token mixer remain.
    assert [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)] == ["norm"]
    assert all(n.endswith(".layer_scale") and ".mlp." not in n for n, m in fused.named_modules() if isinstance(m, LayerScale2d))
    assert fused.head_dist is None


def test_conv_encoder_fuses_exactly(check_fusion):
    fused = check_fusion(ConvEncoder(8, hidden_dim=32), torch.randn(2, 8, 6, 6))
    assert not any(isinstance(m, (nn.BatchNorm2d, LayerScale2d)) for m in fused.modules())


@pytest.mark.parametrize(
    "token_mixer",
    [None, functools.partial(MultiHeadSelfAttention, num_heads=2)],
    ids=["additive", "mhsa"],
)
@pytest.mark.parametrize("local", [None, lambda dim: MobileOneUnit(dim, dim, num_conv_branches=2)], ids=["conv", "mobileone"])
def test_swiftformer_block_fuses_exactly(check_fusion, token_mixer, local):
    block = SwiftFormerBlock(8, token_mixer=token_mixer, local=local)
    fused = check_fusion(block, torch.randn(2, 8, 5, 6))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())


class _RecordingMixer(nn.Module):
    """A token mixer that records the token shape it receives."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, dim)
        self.seen: tuple[int, ...] | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.seen = tuple(tokens.shape)
        return self.linear(tokens)


def test_token_mixer_factory_receives_width_and_tokens():
    block = SwiftFormerBlock(12, token_mixer=_RecordingMixer)
    out = block(torch.randn(3, 12, 4, 5))
    assert out.shape == (3, 12, 4, 5)
    assert isinstance(block.token_mixer, _RecordingMixer) and block.token_mixer.dim == 12
    assert block.token_mixer.seen == (3, 20, 12)


def test_swiftformer_block_rejects_non_callable_mixer():
    with pytest.raises(ValueError, match="token_mixer must be a callable"):
        SwiftFormerBlock(8, token_mixer="additive")  # type: ignore[arg-type]
