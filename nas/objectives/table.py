"""Objective read from a benchmark lookup table (e.g. NAS-Bench-201)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY, LOW_FIDELITY, epoch_metric_key, fidelity_metric_key
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
        low_fidelity_column: the column read by low-fidelity (``"lo"``) evaluations, or
            ``None`` for a mono-fidelity table. On the shipped NAS-Bench-201 table,
            ``val_acc`` is a sensible *proxy* (a cheaper, correlated signal); it is not the
            12-epoch accuracy of the thesis, which the table does not hold.
        low_fidelity_cost: cost of a low-fidelity evaluation in equivalent full
            evaluations (default: NAS-Bench-201's 12 of 200 epochs).
        low_fidelity_epochs: the epoch a low-fidelity evaluation stands for: full
            evaluations report the low-fidelity value under
            ``metrics[epoch_metric_key(low_fidelity_epochs)]``, as a training objective
            reports every epoch's value, and under ``metrics[fidelity_metric_key("lo")]``,
            so that strategies receive it for free whatever epochs their schedule gives
            the low fidelity.

    Attributes:
        values: ``N`` float64 tensor aligned with ``space.all_codes`` (``NaN`` where the
            table has no row for an architecture).
        low_values: the same for ``low_fidelity_column`` (``None`` without one).
    """

    def __init__(
        self,
        space: SearchSpace,
        path: str | Path,
        column: str = "test_acc",
        arch_column: str = "arch",
        low_fidelity_column: str | None = None,
        low_fidelity_cost: float = 12 / 200,
        low_fidelity_epochs: int = 12,
    ) -> None:
        path = resolve_path(path)
        if not path.is_file():
            raise NASError(f"Benchmark table {path} does not exist; pass the path of a CSV file with an {arch_column!r} column.")
        if not 0 < low_fidelity_cost < 1:
            raise NASError(f"A low-fidelity evaluation must cost less than a full one and more than nothing, got low_fidelity_cost={low_fidelity_cost}.")
        columns = [column] + ([low_fidelity_column] if low_fidelity_column is not None else [])
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            for needed in (arch_column, *columns):
                if needed not in header:
                    raise NASError(f"Benchmark table {path} has no column {needed!r}; its columns are {', '.join(header)}.")
            rows = [(row[arch_column], [row[c] for c in columns]) for row in reader]
        codes = torch.tensor([space.parse(arch) for arch, _ in rows], dtype=torch.long)
        index = space.index_of(codes)
        self.space = space
        self.column = column
        self.values = self._column(path, columns, 0, rows, index)
        self.low_fidelity_column = low_fidelity_column
        self.low_fidelity_cost = low_fidelity_cost
        self.low_fidelity_epochs = low_fidelity_epochs
        self.low_values = self._column(path, columns, 1, rows, index) if low_fidelity_column is not None else None
        self.optimum = float(torch.nan_to_num(self.values, nan=-math.inf).max())

    def _column(self, path: Path, columns: list[str], j: int, rows: list[tuple[str, list[str]]], index: torch.Tensor) -> torch.Tensor:
        """Column ``j`` of ``rows`` as ``N`` float64 values aligned with ``space.all_codes``."""
        try:
            raw = torch.tensor([float(v[j]) for _, v in rows], dtype=torch.float64)
        except ValueError as exc:
            raise NASError(f"Column {columns[j]!r} of benchmark table {path} is not numeric ({exc}).") from None
        values = torch.full((self.space.size,), float("nan"), dtype=torch.float64)
        values[index[index >= 0]] = raw[index >= 0]
        return values

    def evaluate(self, encoding: Encoding, fidelity: str = HIGH_FIDELITY) -> Evaluation:
        cost = self.planned_cost(fidelity)
        index = int(self.space.index_of(torch.tensor([encoding], dtype=torch.long))[0])
        table = self.low_values if fidelity == LOW_FIDELITY and self.low_values is not None else self.values
        value = float(table[index]) if index >= 0 else math.nan
        if math.isnan(value):
            return Evaluation(value=math.nan, cost=cost, status="failed", error=f"{self.space.to_string(encoding)} is not in the table")
        if fidelity == LOW_FIDELITY or self.low_values is None:
            return Evaluation(value=value, cost=cost)
        low = float(self.low_values[index])
        return Evaluation(value=value, metrics={} if math.isnan(low) else {epoch_metric_key(self.low_fidelity_epochs): low, fidelity_metric_key(LOW_FIDELITY): low})

    def planned_cost(self, fidelity: str) -> float:
        """What an evaluation at ``fidelity`` costs (also charged when it fails); raises a
        :class:`NASError` for a fidelity the table does not hold."""
        if fidelity not in (HIGH_FIDELITY, LOW_FIDELITY):
            raise NASError(f"Unknown fidelity {fidelity!r}; a table objective evaluates at {HIGH_FIDELITY!r} or {LOW_FIDELITY!r}.")
        if fidelity == LOW_FIDELITY and self.low_values is None:
            raise NASError("This benchmark table objective has no low-fidelity column; set low_fidelity_column (e.g. val_acc) for a multi-fidelity search.")
        return self.low_fidelity_cost if fidelity == LOW_FIDELITY else 1.0
