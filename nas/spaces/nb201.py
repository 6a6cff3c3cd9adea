"""The NAS-Bench-201 cell space: 6 edges x 5 operations = 15,625 architectures."""
from __future__ import annotations

from functools import cached_property

import torch
from torch import nn

from models.nb201 import NB201_EDGES, NB201_OPS, NB201Network, nb201_cell_function
from nas.errors import NASError, whole_number
from nas.space import Encoding, SearchSpace
from nas.spaces.common import check_resolution

#: Input-to-output paths through the cell, as edge indices into ``NB201_EDGES``.
_CELL_PATHS: tuple[tuple[int, ...], ...] = ((3,), (0, 4), (1, 5), (0, 2, 5))
_FEATURE_KINDS = ("onehot", "path", "onehot+path")


class NB201Space(SearchSpace):
    """NAS-Bench-201 (Dong & Yang, 2020): one cell shared by the 15 cells of the network.

    Args:
        channels: width of the first stage (the benchmark uses 16).
        cells_per_stage: cells per stage (the benchmark uses 5).
        features: surrogate input: ``onehot`` (30 values), ``path`` (the BANANAS path
            encoding: which op sequence runs along each input-to-output path, 100 values)
            or ``onehot+path``.
        resolution: side of the square input images (CIFAR: 32).
    """

    name = "nb201"

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, features: str = "onehot", resolution: int = 32) -> None:
        if features not in _FEATURE_KINDS:
            raise NASError(f"Unknown nb201 feature kind {features!r}; valid kinds are {', '.join(_FEATURE_KINDS)}.")
        self.channels = whole_number("Search space 'nb201' channels", channels, minimum=1)
        self.cells_per_stage = whole_number("Search space 'nb201' cells_per_stage", cells_per_stage, minimum=1)
        self.feature_kind = features
        self.resolution = check_resolution(self.name, resolution)

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(f"edge_{t}<-{s}" for t, s in NB201_EDGES)

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        return (NB201_OPS,) * len(NB201_EDGES)

    def to_string(self, encoding: Encoding) -> str:
        ops = [NB201_OPS[v] for v in encoding]
        return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)

    def parse(self, text: str) -> Encoding:
        nodes = text.strip().strip("|").split("|+|") if text.strip() else []
        ops: list[int] = []
        if len(nodes) == 3:
            for target, node in enumerate(nodes, start=1):
                items = node.strip("|").split("|")
                if len(items) != target:
                    break
                for source, item in enumerate(items):
                    op, _, src = item.partition("~")
                    if op not in NB201_OPS or src != str(source):
                        break
                    ops.append(NB201_OPS.index(op))
        if len(ops) != len(NB201_EDGES):
            raise NASError(
                f"Malformed NAS-Bench-201 architecture string {text!r}; expected the form "
                f"'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with op in {', '.join(NB201_OPS)}."
            )
        return tuple(ops)

    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        enc = self.validate(encoding)
        return NB201Network([NB201_OPS[v] for v in enc], self.channels, self.cells_per_stage, num_classes)

    def signature(self) -> dict[str, object]:
        return {"name": self.name, "channels": self.channels, "cells_per_stage": self.cells_per_stage, "resolution": self.resolution}

    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, 3, self.resolution, self.resolution)

    def cost_classes(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` keys of the multiset of operations of each of ``n x 6`` codes: the network's
        FLOPs and parameters add up over its operations whatever edge each sits on."""
        counts = torch.nn.functional.one_hot(codes, len(NB201_OPS)).sum(1)  # n x ops
        return (counts * (len(NB201_EDGES) + 1) ** torch.arange(len(NB201_OPS))).sum(1)

    @cached_property
    def _function_ids(self) -> torch.Tensor:
        """``N`` ids over ``all_codes``, equal for cells computing the same function."""
        ids: dict[str, int] = {}
        return torch.tensor([ids.setdefault(nb201_cell_function([NB201_OPS[v] for v in row]), len(ids)) for row in self.all_codes.tolist()], dtype=torch.long)

    def function_keys(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` keys of :func:`models.nb201.nb201_cell_function` of ``n x 6`` codes: of the
        15,625 cells, 5,269 compute distinct functions; 242 compute the identity ``x``, 90
        of them without any weight."""
        index = self.index_of(codes)
        if bool((index < 0).any()):
            raise NASError("function_keys takes members of the NAS-Bench-201 space only: 6 operation indices in 0..4.")
        return self._function_ids[index]

    @cached_property
    def _path_offsets(self) -> list[int]:
        real_ops = len(NB201_OPS) - 1  # "none" cuts a path, so it has no path feature
        sizes = [real_ops ** len(p) for p in _CELL_PATHS]
        return [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def path_encoding(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x 100`` indicators of (input-to-output path, op sequence along it) of ``n x 6`` codes."""
        out = torch.zeros(codes.shape[0], self._path_offsets[-1])
        rows = torch.arange(codes.shape[0])
        real_ops = len(NB201_OPS) - 1
        for path, offset in zip(_CELL_PATHS, self._path_offsets):
            ops = codes[:, list(path)]
            alive = (ops > 0).all(dim=1)
            index = torch.zeros(codes.shape[0], dtype=torch.long)
            for k in range(len(path)):
                index = index * real_ops + (ops[:, k] - 1).clamp(min=0)
            out[rows[alive], offset + index[alive]] = 1.0
        return out

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        if self.feature_kind == "onehot":
            return self.one_hot(codes)
        if self.feature_kind == "path":
            return self.path_encoding(codes)
        return torch.cat([self.one_hot(codes), self.path_encoding(codes)], dim=1)
