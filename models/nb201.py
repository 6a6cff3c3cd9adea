"""The NAS-Bench-201 network (Dong & Yang, ICLR 2020).

A cell is a DAG over 4 nodes whose 6 edges (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2) each
carry one operation. The macro skeleton is: 3x3 conv stem, then three stages of ``N``
cells with ``C``, ``2C``, ``4C`` channels separated by residual reduction blocks, then
BN-ReLU, global pooling and a linear classifier.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN, the pre-activation convolution of NAS-Bench-201."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` operation: the edge carries no signal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_nb201_op(name: str, channels: int) -> nn.Module:
    """Build one cell operation by its NAS-Bench-201 name."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"Unknown NAS-Bench-201 operation {name!r}; valid operations are {', '.join(NB201_OPS)}.")


def nb201_cell_function(ops: Sequence[str]) -> str:
    """A canonical expression of what a cell computes from its input ``x``: equal strings
    for cells that compute the same function with the same parameters.

    Each node is the multiset of its terms: addition is commutative and associative, so a
    skip edge passes on its source's terms, and average pooling (which ignores padding) is
    linear, so it pools each term. A convolution (ReLU first) is one term of its whole
    input. An all-zero node adds nothing through ``none``, ``skip_connect`` or
    ``avg_pool_3x3``; a convolution of it still adds its batch norm's learned bias,
    written ``op(0)``. A cell whose output is all zeros is ``"0"``.
    """
    if len(ops) != len(NB201_EDGES):
        raise ValueError(f"A NAS-Bench-201 cell has {len(NB201_EDGES)} edges, got {len(ops)} operations.")
    nodes: list[tuple[str, ...]] = [("x",)]
    for target in range(1, 4):
        terms: list[str] = []
        for (edge_target, source), op in zip(NB201_EDGES, ops):
            if edge_target != target or op == "none":
                continue
            value = nodes[source]
            if op == "skip_connect":
                terms += value
            elif op == "avg_pool_3x3":
                terms += [f"{op}({term})" for term in value]
            elif value or op.startswith("nor_conv"):
                terms.append(f"{op}({'+'.join(value) or '0'})")
        nodes.append(tuple(sorted(terms)))
    return "+".join(nodes[3]) or "0"


class NB201Cell(nn.Module):
    """A NAS-Bench-201 cell: node j is the sum of op(j<-i)(node i) over i < j."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(ops) != len(NB201_EDGES):
            raise ValueError(f"A NAS-Bench-201 cell has {len(NB201_EDGES)} edges, got {len(ops)} operations.")
        self.ops = tuple(ops)
        self.edges = nn.ModuleList(make_nb201_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B x C x H x W`` -> ``B x C x H x W``."""
        nodes = [x]
        edge_index = 0
        for target in range(1, 4):
            total = 0
            for source in range(target):
                total = total + self.edges[edge_index](nodes[source])
                edge_index += 1
            nodes.append(total)
        return nodes[3]


class ResidualReduction(nn.Module):
    """The residual block between stages: halves the resolution, changes the width."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, stride=1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B x c_in x H x W`` -> ``B x c_out x H/2 x W/2``."""
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 macro network around one searched cell (shared by all stages)."""

    def __init__(self, ops: Sequence[str], channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        width = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(width, width * 2))
                width *= 2
            layers.extend(NB201Cell(ops, width) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B x 3 x H x W`` -> logits ``B x num_classes``."""
        return self.classifier(self.head(self.cells(self.stem(x))))
