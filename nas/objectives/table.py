"""Objective read from a benchmark lookup table (e.g. NAS-Bench-201)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from nas.errors import NASError
from nas.objectives.base import Evaluation
from nas.paths import resolve_path
from nas.space import Encoding, SearchSpace


class TableObjective:
    """Looks architectures up in a CSV with an ``arch`` column and one column per metric.

    Args:
        space: the search space whose ``parse`` reads the ``arch`` strings.
        path: the CSV file (``package://nb201/cifar10.csv`` for the shipped NAS-Bench-201 table).
        column: the column to maximise (e.g. ``test_acc``).
        arch_column: the column holding architecture strings.

    Attributes:
        values: ``N`` float64 tensor aligned with ``space.all_codes`` (``NaN`` where the
            table has no row for an architecture).
    """

    def __init__(self, space: SearchSpace, path: str | Path, column: str = "test_acc", arch_column: str = "arch") -> None:
        path = resolve_path(path)
        if not path.is_file():
            raise NASError(f"Benchmark table {path} does not exist; pass the path of a CSV file with an {arch_column!r} column.")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            for needed in (arch_column, column):
                if needed not in header:
                    raise NASError(f"Benchmark table {path} has no column {needed!r}; its columns are {', '.join(header)}.")
            rows = [(row[arch_column], row[column]) for row in reader]
        codes = torch.tensor([space.parse(arch) for arch, _ in rows], dtype=torch.long)
        try:
            raw = torch.tensor([float(v) for _, v in rows], dtype=torch.float64)
        except ValueError as exc:
            raise NASError(f"Column {column!r} of benchmark table {path} is not numeric ({exc}).") from None
        index = space.index_of(codes)
        self.space = space
        self.column = column
        self.values = torch.full((space.size,), float("nan"), dtype=torch.float64)
        self.values[index[index >= 0]] = raw[index >= 0]
        self.optimum = float(torch.nan_to_num(self.values, nan=-math.inf).max())

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        index = int(self.space.index_of(torch.tensor([encoding], dtype=torch.long))[0])
        value = float(self.values[index]) if index >= 0 else math.nan
        if math.isnan(value):
            return Evaluation(value=math.nan, status="failed", error=f"{self.space.to_string(encoding)} is not in the table")
        return Evaluation(value=value)
