"""The DARTS network (Liu et al., ICLR 2019), as trained by NAS-Bench-301 (Siems et al., 2020).

A *genotype* gives each of the two cell types (normal, reduction) four intermediate nodes;
each node sums two operations applied to two earlier states of the cell (the two cell
inputs are states 0 and 1, node ``k`` is state ``k + 2``). The cell's output is the
concatenation of the four nodes along channels. The network is a 3x3 conv stem with
``3 C`` channels, then ``layers`` cells, the ones at 1/3 and 2/3 of the depth being
reduction cells that halve the resolution and double the width, then global pooling and a
linear classifier. NAS-Bench-301 trains 8 cells with ``C = 32``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

#: The operations of a DARTS edge.
DARTS_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
#: Intermediate nodes of a cell.
DARTS_NODES = 4

#: One node of a cell: ``((state, op), (state, op))``, the two inputs and their operations.
NodeGenotype = tuple[tuple[int, str], tuple[int, str]]


@dataclass(frozen=True)
class DartsGenotype:
    """The two cells of a DARTS network: ``DARTS_NODES`` nodes each, see :data:`NodeGenotype`."""

    normal: tuple[NodeGenotype, ...]
    reduce: tuple[NodeGenotype, ...]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False), nn.BatchNorm2d(c_out))


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked separable convolutions (the first one strided), as in DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(DilConv(c_in, c_in, kernel_size, stride, padding, 1), DilConv(c_in, c_out, kernel_size, 1, padding, 1))


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset strided 1x1 convs (the strided ``skip_connect``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B x c_in x H x W`` (``H``, ``W`` even) -> ``B x c_out x H/2 x W/2``."""
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(x[:, :, 1:, 1:])], dim=1))


_OP_FACTORIES: dict[str, Callable[[int, int], nn.Module]] = {
    "max_pool_3x3": lambda c, stride: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda c, stride: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda c, stride: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
    "sep_conv_3x3": lambda c, stride: SepConv(c, c, 3, stride, 1),
    "sep_conv_5x5": lambda c, stride: SepConv(c, c, 5, stride, 2),
    "dil_conv_3x3": lambda c, stride: DilConv(c, c, 3, stride, 2, 2),
    "dil_conv_5x5": lambda c, stride: DilConv(c, c, 5, stride, 4, 2),
}


def make_darts_op(name: str, channels: int, stride: int) -> nn.Module:
    """One edge operation by its DARTS name."""
    if name not in _OP_FACTORIES:
        raise ValueError(f"Unknown DARTS operation {name!r}; valid operations are {', '.join(DARTS_OPS)}.")
    return _OP_FACTORIES[name](channels, stride)


class DartsCell(nn.Module):
    """A normal or reduction cell: ``B x c_prev_prev x 2H x 2W`` (after a reduction) or
    ``B x c_prev_prev x H x W`` and ``B x c_prev x H x W`` in, ``B x 4 c x H' x W'`` out."""

    def __init__(self, nodes: tuple[NodeGenotype, ...], c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        if len(nodes) != DARTS_NODES:
            raise ValueError(f"A DARTS cell has {DARTS_NODES} intermediate nodes, got {len(nodes)}.")
        self.preprocess0 = FactorizedReduce(c_prev_prev, channels) if reduction_prev else ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        self.inputs: list[tuple[int, int]] = []
        ops = []
        for k, node in enumerate(nodes):
            for state, op in node:
                if not 0 <= state < k + 2:
                    raise ValueError(f"Node {k + 2} of a DARTS cell can only read states 0..{k + 1}, got {state}.")
                ops.append(make_darts_op(op, channels, 2 if reduction and state < 2 else 1))
            self.inputs.append((node[0][0], node[1][0]))
        self.ops = nn.ModuleList(ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k, (a, b) in enumerate(self.inputs):
            states.append(self.ops[2 * k](states[a]) + self.ops[2 * k + 1](states[b]))
        return torch.cat(states[2:], dim=1)


class DartsNetwork(nn.Module):
    """The DARTS evaluation network (without the auxiliary head and drop-path, which only
    shape training): ``B x 3 x H x W`` images -> ``B x num_classes`` logits.

    Args:
        genotype: the normal and reduction cells.
        channels: initial channels ``C`` (NAS-Bench-301: 32).
        layers: number of cells (NAS-Bench-301: 8).
        num_classes: outputs of the classifier.
    """

    def __init__(self, genotype: DartsGenotype, channels: int = 32, layers: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        stem = 3 * channels
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        c_prev_prev, c_prev, width = stem, stem, channels
        cells = []
        reduction_prev = False
        for layer in range(layers):
            reduction = layer in (layers // 3, 2 * layers // 3)
            if reduction:
                width *= 2
            nodes = genotype.reduce if reduction else genotype.normal
            cells.append(DartsCell(nodes, c_prev_prev, c_prev, width, reduction, reduction_prev))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, DARTS_NODES * width
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))
