"""A small reference CNN: the candidate used by smoke runs, tests and the training benchmark."""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU stages (the last two halve the resolution), pooling, linear head.

    Args:
        num_classes: width of the output.
        width: channels of the first stage; the next stages have 2x and 4x.
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(3, width, 1),
            _conv_bn_relu(width, 2 * width, 2),
            _conv_bn_relu(2 * width, 4 * width, 2),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``batch x 3 x H x W`` -> ``batch x num_classes`` logits."""
        return self.head(self.features(images).mean(dim=(2, 3)))
