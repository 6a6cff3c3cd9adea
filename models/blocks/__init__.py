"""Building blocks of the model zoo, one module per family."""
from models.blocks.attention import MultiHeadSelfAttention, SelfAttentionBlock
from models.blocks.layers import ConvBN, LayerScale2d, apply_to_tokens, fuse_conv_bn
from models.blocks.mbconv import MBConv
from models.blocks.mlp import ConvMlp, MlpBlock
from models.blocks.moat import MOATBlock
from models.blocks.mobileone import MobileOneBlock, MobileOneUnit
from models.blocks.se import SqueezeExcite
from models.blocks.stems import ConvStem, conv_downsample
from models.blocks.swiftformer import (
    BlockFactory,
    ConvEncoder,
    EfficientAdditiveAttention,
    SwiftFormerBlock,
    TokenMixerFactory,
)

__all__ = [
    "BlockFactory",
    "ConvBN",
    "ConvEncoder",
    "ConvMlp",
    "ConvStem",
    "EfficientAdditiveAttention",
    "LayerScale2d",
    "MBConv",
    "MOATBlock",
    "MlpBlock",
    "MobileOneBlock",
    "MobileOneUnit",
    "MultiHeadSelfAttention",
    "SelfAttentionBlock",
    "SqueezeExcite",
    "SwiftFormerBlock",
    "TokenMixerFactory",
    "apply_to_tokens",
    "conv_downsample",
    "fuse_conv_bn",
]
